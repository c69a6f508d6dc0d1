use super::*;

/// The canonical form the Python side of the table was printed in (book levels
/// aggregated by first occurrence, as Python's dict does).
fn describe(input: &Input<'_>) -> String {
    fn agg(levels: &[(i128, i128)]) -> String {
        let mut out: Vec<(i128, i128)> = Vec::new();
        for &(p, q) in levels {
            match out.iter_mut().find(|e| e.0 == p) {
                Some(e) => e.1 += q,
                None => out.push((p, q)),
            }
        }
        let parts: Vec<String> = out.iter().map(|(p, q)| format!("{p}:{q}")).collect();
        parts.join(",")
    }
    match input {
        Input::Market { market, imr_e8, mmr_e8, liq_fee_e8, max_oracle_move_e8 } => {
            format!("market|{market}|{imr_e8}|{mmr_e8}|{liq_fee_e8}|{max_oracle_move_e8:?}")
        }
        Input::Deposit { account, amount_e8 } => format!("deposit|{account}|{amount_e8}"),
        Input::Withdraw { account, amount_e8 } => format!("withdraw|{account}|{amount_e8}"),
        Input::Oracle { market, price_e8 } => format!("oracle|{market}|{price_e8}"),
        Input::Fill(f) => format!(
            "fill|{}|{}|{}|{}|{}|{}|{}|{}",
            f.fill_id, f.market, f.price_e8, f.qty_e8, f.buyer, f.seller, f.buyer_fee_e8, f.seller_fee_e8
        ),
        Input::Book { market, bids, asks } => {
            format!("book|{market}|{}|{}", agg(bids), agg(asks))
        }
    }
}

fn parse(raw: &[u8]) -> Option<String> {
    parse_input(raw).map(|input| describe(&input))
}

fn amount(raw_amount: &str) -> Option<i128> {
    let raw = format!(r#"{{"type":"deposit","account":"a","amount":{raw_amount}}}"#);
    match parse_input(raw.as_bytes())? {
        Input::Deposit { amount_e8, .. } => Some(amount_e8),
        _ => panic!("not a deposit"),
    }
}

fn fee(raw_fee: &str) -> Option<i128> {
    let raw = format!(
        r#"{{"type":"fill","fill_id":"f","market":"M","price":1,"qty":1,"buyer":"a","seller":"b","buyer_fee":{raw_fee}}}"#
    );
    match parse_input(raw.as_bytes())? {
        Input::Fill(f) => Some(f.buyer_fee_e8),
        _ => panic!("not a fill"),
    }
}

const DEPOSIT: &str = r#""type":"deposit","account":"a","amount":"1""#;

fn with_extra(extra: &str) -> Option<String> {
    parse(format!("{{{DEPOSIT},{extra}}}").as_bytes())
}

// Expected results printed by `clearing.engine.events.decode_input` (REJECT = a
// DecodeFailure); the flag marks a deliberate gap: Python accepts, we return None.
const TABLE: &[(&[u8], &str, bool)] = &[
    (b"{\"type\":\"fill\",\"fill_id\":\"f123\",\"market\":\"BTC-PERP\",\"price\":\"101.25\",\"qty\":\"0.5\",\"buyer\":\"acct-17\",\"seller\":\"acct-99\",\"buyer_fee\":\"0.01\",\"seller_fee\":\"-0.005\",\"ts\":1700000000000000000}", "fill|f123|BTC-PERP|10125000000|50000000|acct-17|acct-99|1000000|-500000", false),
    (b"{\"type\":\"fill\",\"fill_id\":\"f1\",\"market\":\"M\",\"price\":\"1\",\"qty\":\"1\",\"buyer\":\"a\",\"seller\":\"b\"}", "fill|f1|M|100000000|100000000|a|b|0|0", false),
    (b"{\"seller\":\"b\",\"buyer\":\"a\",\"qty\":3,\"price\":7,\"market\":\"M\",\"fill_id\":\"f1\",\"type\":\"fill\"}", "fill|f1|M|700000000|300000000|a|b|0|0", false),
    (b"{\"type\":\"fill\",\"fill_id\":\"f1\",\"market\":\"M\",\"price\":\"1\",\"qty\":\"1\",\"buyer\":\"a\",\"seller\":\"b\",\"price\":\"2\"}", "fill|f1|M|200000000|100000000|a|b|0|0", true),
    (b"{\"type\":\"fill\",\"fill_id\":\"f1\",\"market\":\"M\",\"price\":\"1\",\"qty\":\"1\",\"buyer\":\"a\",\"seller\":\"b\",\"buyer_fee\":\"-1000000000000000\",\"seller_fee\":1000000000000000}", "fill|f1|M|100000000|100000000|a|b|-100000000000000000000000|100000000000000000000000", false),
    (b"{\"type\":\"fill\",\"fill_id\":\"f1\",\"market\":\"M\",\"price\":\"1\",\"qty\":\"1\",\"buyer\":\"a\",\"seller\":\"b\",\"buyer_fee\":\"-1000000000000000.00000001\"}", "REJECT", false),
    (b"{\"type\":\"fill\",\"fill_id\":\"f1\",\"market\":\"M\",\"price\":\"1\",\"qty\":\"1\",\"buyer\":\"a\",\"seller\":\"b\",\"buyer_fee\":null}", "REJECT", false),
    (b"{\"type\":\"fill\",\"fill_id\":\"f1\",\"market\":\"M\",\"price\":\"1\",\"qty\":\"1\",\"buyer\":\"a\",\"seller\":\"b\",\"seller_fee\":0.5}", "REJECT", false),
    (b"{\"type\":\"fill\",\"fill_id\":\"f1\",\"market\":\"M\",\"price\":\"1\",\"qty\":\"1\",\"buyer\":\"a\",\"seller\":\"b\",\"seller\":\"\"}", "REJECT", false),
    (b"{\"type\":\"fill\",\"fill_id\":\"f1\",\"market\":\"M\",\"price\":\"1\",\"qty\":\"-1\",\"buyer\":\"a\",\"seller\":\"b\"}", "REJECT", false),
    (b"{\"type\":\"fill\",\"fill_id\":\"f1\",\"market\":\"M\",\"price\":\"1\",\"qty\":\"1\",\"buyer\":\"a\"}", "REJECT", false),
    (b"{\"type\":\"fill\",\"fill_id\":\"f\\u0031\",\"market\":\"M\",\"price\":\"1\",\"qty\":\"1\",\"buyer\":\"a\",\"seller\":\"b\"}", "fill|f1|M|100000000|100000000|a|b|0|0", true),
    (b" \r\n\t{ \"type\" : \"deposit\" ,\n\"account\":\"a\" , \"amount\" : \"1\" }\r\n ", "deposit|a|100000000", false),
    (b"{\"type\":\"deposit\",\"account\":\"a\",\"amount\":\"1\"}\x0c", "REJECT", false),
    (b"\xef\xbb\xbf{\"type\":\"deposit\",\"account\":\"a\",\"amount\":\"1\"}", "REJECT", false),
    (b"{\"type\":\"deposit\",\"account\":\"a\",\"amount\":\"1\",\"x\":1,\"x\":[true,false,null,{\"y\":-1.5e-3}]}", "deposit|a|100000000", false),
    (b"{\"type\":\"deposit\",\"account\":\"a\",\"amount\":\"1\",\"x\":[1,]}", "REJECT", false),
    (b"{\"type\":\"deposit\",\"account\":\"a\",\"amount\":\"1\",\"x\":01}", "REJECT", false),
    (b"{\"type\":\"deposit\",\"account\":\"a\",\"amount\":\"1\",\"x\":\"\x01\"}", "REJECT", false),
    (b"{\"type\":\"deposit\",\"account\":\"a\",\"amount\":\"1\",\"x\":\"a\\nb\"}", "deposit|a|100000000", true),
    (b"{\"type\":\"deposit\",\"account\":\"a\",\"amount\":\"1\",\"x\":\xff}", "REJECT", false),
    (b"{\"type\":\"deposit\",\"account\":\"\xc3\xa9l\xc3\xa8ve \xf0\x9f\x98\x80\",\"amount\":\"007.50\"}", "deposit|élève 😀|750000000", false),
    (b"{\"type\":\"deposit\",\"account\":\"a\",\"amount\":\"1000000000000000\"}", "deposit|a|100000000000000000000000", false),
    (b"{\"type\":\"deposit\",\"account\":\"a\",\"amount\":\"1000000000000000.00000001\"}", "REJECT", false),
    (b"{\"type\":\"deposit\",\"account\":\"a\",\"amount\":\"0000000000000000000000000000000000000000999999999999999.99999999\"}", "deposit|a|99999999999999999999999", false),
    (b"{\"type\":\"deposit\",\"account\":\"a\",\"amount\":1000000000000001}", "REJECT", false),
    (b"{\"type\":\"deposit\",\"account\":\"a\",\"amount\":\"0.00000001\"}", "deposit|a|1", false),
    (b"{\"type\":\"deposit\",\"account\":\"a\",\"amount\":\"0.000000001\"}", "REJECT", false),
    (b"{\"type\":\"deposit\",\"account\":\"a\",\"amount\":\"1.5e3\"}", "REJECT", false),
    (b"{\"type\":\"deposit\",\"account\":\"a\",\"amount\":1.0}", "REJECT", false),
    (b"{\"type\":\"deposit\",\"account\":\"a\",\"amount\":true}", "REJECT", false),
    (b"{\"type\":\"deposit\",\"account\":\"a\",\"amount\":\"\xd9\xa3\"}", "REJECT", false),
    (b"{\"type\":\"deposit\",\"account\":\"a\",\"amount\":\"-0\"}", "REJECT", false),
    (b"{\"type\":\"withdraw\",\"account\":\"a\",\"amount\":5,\"ts\":-9223372036854775808}", "withdraw|a|500000000", false),
    (b"{\"type\":\"withdraw\",\"account\":\"a\",\"amount\":5,\"ts\":9223372036854775808}", "REJECT", false),
    (b"{\"type\":\"withdraw\",\"account\":\"a\",\"amount\":5,\"ts\":-0}", "withdraw|a|500000000", false),
    (b"{\"type\":\"withdraw\",\"account\":\"a\",\"amount\":5,\"ts\":\"1\"}", "REJECT", false),
    (b"{\"type\":\"withdraw\",\"account\":\"a\",\"amount\":5,\"ts\":1e3}", "REJECT", false),
    (b"{\"type\":\"oracle\",\"market\":\"M\",\"price\":\"85\",\"amount\":{\"any\":[\"thing\"]},\"bids\":\"x\"}", "oracle|M|8500000000", false),
    (b"{\"type\":\"oracle\",\"market\":\"M\",\"price\":0}", "REJECT", false),
    (b"{\"type\":\"Oracle\",\"market\":\"M\",\"price\":1}", "REJECT", false),
    (b"{\"market\":\"M\",\"price\":1}", "REJECT", false),
    (b"{\"type\":1,\"market\":\"M\",\"price\":1}", "REJECT", false),
    (b"{\"type\":\"market\",\"market\":\"M\",\"imr\":\"1\",\"mmr\":\"1\",\"liq_fee\":\"0.99999999\"}", "market|M|100000000|100000000|99999999|None", false),
    (b"{\"type\":\"market\",\"market\":\"M\",\"imr\":\"0.1\",\"mmr\":\"0.2\",\"liq_fee\":\"0\"}", "REJECT", false),
    (b"{\"type\":\"market\",\"market\":\"M\",\"imr\":\"0.1\",\"mmr\":\"0\",\"liq_fee\":\"0\"}", "REJECT", false),
    (b"{\"type\":\"market\",\"market\":\"M\",\"imr\":\"0.1\",\"mmr\":\"0.05\",\"liq_fee\":\"1\"}", "REJECT", false),
    (b"{\"type\":\"market\",\"market\":\"M\",\"imr\":\"0.1\",\"mmr\":\"0.05\",\"liq_fee\":\"-0.01\"}", "REJECT", false),
    (b"{\"type\":\"market\",\"market\":\"M\",\"imr\":\"0.1\",\"mmr\":\"0.05\",\"liq_fee\":0,\"max_oracle_move\":\"0.00000001\"}", "market|M|10000000|5000000|0|Some(1)", false),
    (b"{\"type\":\"market\",\"market\":\"M\",\"imr\":\"0.1\",\"mmr\":\"0.05\",\"liq_fee\":0,\"max_oracle_move\":0}", "REJECT", false),
    (b"{\"type\":\"book\",\"market\":\"M\",\"bids\":[[\"100\",\"1\"],[100,\"2\"],[\"99.5\",3]],\"asks\":[]}", "book|M|10000000000:300000000,9950000000:300000000|", false),
    (b"{\"type\":\"book\",\"market\":\"M\"}", "book|M||", false),
    (b"{\"type\":\"book\",\"market\":\"M\",\"bids\":[[\"1\",\"1\",\"1\"]]}", "REJECT", false),
    (b"{\"type\":\"book\",\"market\":\"M\",\"asks\":[[1,0]]}", "REJECT", false),
    (b"{\"type\":\"book\",\"market\":\"M\",\"asks\":[[1.5,1]]}", "REJECT", false),
    (b"{\"type\":\"book\",\"market\":\"M\",\"asks\":null}", "REJECT", false),
    (b"{\"type\":\"deposit\",\"account\":\"a\",\"amount\":\"1\",\"bids\":[[0,1]]}", "deposit|a|100000000", false),
    (b"[]", "REJECT", false),
    (b"{}", "REJECT", false),
    (b"", "REJECT", false),
];

#[test]
fn matches_python_decoder_table() {
    for &(raw, python, gap) in TABLE {
        let got = parse(raw);
        let shown = String::from_utf8_lossy(raw);
        if gap || python == "REJECT" {
            assert_eq!(got, None, "{shown}");
        } else {
            assert_eq!(got.as_deref(), Some(python), "{shown}");
        }
    }
}

#[test]
fn typical_fill() {
    let raw = br#"{"type":"fill","fill_id":"f123","market":"BTC-PERP","price":"101.25","qty":"0.5","buyer":"acct-17","seller":"acct-99","buyer_fee":"0.01","seller_fee":"-0.005","ts":1700000000000000000}"#;
    let Some(Input::Fill(f)) = parse_input(raw) else { panic!("not parsed") };
    assert_eq!((f.fill_id, f.market, f.buyer, f.seller), ("f123", "BTC-PERP", "acct-17", "acct-99"));
    assert_eq!((f.price_e8, f.qty_e8), (10_125_000_000, 50_000_000));
    assert_eq!((f.buyer_fee_e8, f.seller_fee_e8), (1_000_000, -500_000));
}

#[test]
fn every_input_type_and_field_kind() {
    let cases: &[(&str, &str)] = &[
        (r#"{"type":"market","market":"M","imr":"0.1","mmr":5e-2,"liq_fee":"0"}"#, "NONE"),
        (
            r#"{"type":"market","market":"M","imr":1,"mmr":"0.5","liq_fee":0,"max_oracle_move":2}"#,
            "market|M|100000000|50000000|0|Some(200000000)",
        ),
        (
            r#"{"type":"market","market":"M","imr":"0.1","mmr":"0.1","liq_fee":"0.005"}"#,
            "market|M|10000000|10000000|500000|None",
        ),
        (r#"{"type":"deposit","account":"a","amount":3}"#, "deposit|a|300000000"),
        (r#"{"type":"withdraw","account":"a","amount":"0.5"}"#, "withdraw|a|50000000"),
        (r#"{"type":"oracle","market":"M","price":"85.25"}"#, "oracle|M|8525000000"),
        (
            r#"{"type":"fill","fill_id":"f","market":"M","price":2,"qty":"3","buyer":"a","seller":"b","seller_fee":1}"#,
            "fill|f|M|200000000|300000000|a|b|0|100000000",
        ),
        (r#"{"type":"book","market":"M","bids":[[1,"2"]]}"#, "book|M|100000000:200000000|"),
        (r#"{"type":"book","market":"M","asks":[["1",2]]}"#, "book|M||100000000:200000000"),
        // Wrong kinds: number for an id, string ts, bool/null/array for a Num.
        (r#"{"type":"deposit","account":1,"amount":3}"#, "NONE"),
        (r#"{"type":"deposit","account":"a","amount":3,"ts":"5"}"#, "NONE"),
        (r#"{"type":"deposit","account":"a","amount":false}"#, "NONE"),
        (r#"{"type":"deposit","account":"a","amount":null}"#, "NONE"),
        (r#"{"type":"deposit","account":"a","amount":["1"]}"#, "NONE"),
        (r#"{"type":"oracle","market":null,"price":1}"#, "NONE"),
        (r#"{"type":"book","market":"M","bids":{}}"#, "NONE"),
        (r#"{"type":"book","market":"M","bids":[[1,2]],"asks":[["1"]]}"#, "NONE"),
        (r#"{"type":"book","market":"M","bids":[[1,2],[3,"x"]]}"#, "NONE"),
        // Missing required fields.
        (r#"{"type":"oracle","market":"M"}"#, "NONE"),
        (r#"{"type":"market","market":"M","imr":"0.1","mmr":"0.1"}"#, "NONE"),
        (r#"{"type":"book","bids":[]}"#, "NONE"),
        (r#"{"type":"book"}"#, "NONE"),
        (r#"{"type":null}"#, "NONE"),
    ];
    for &(raw, expected) in cases {
        let got = parse(raw.as_bytes()).unwrap_or_else(|| "NONE".to_string());
        assert_eq!(got, expected, "{raw}");
    }
}

#[test]
fn type_may_come_anywhere() {
    let a = parse(br#"{"amount":"2","type":"deposit","account":"a"}"#);
    let b = parse(br#"{"account":"a","amount":"2","type":"deposit"}"#);
    assert_eq!(a.as_deref(), Some("deposit|a|200000000"));
    assert_eq!(a, b);
    // Fields of other types are unknown fields: any valid value is ignored.
    let c = parse(br#"{"price":{},"amount":"2","bids":[[0,0]],"account":"a","type":"deposit"}"#);
    assert_eq!(c, a);
}

#[test]
fn whitespace() {
    let raw = b" \t\r\n{ \"type\" :\t\"book\" ,\r\n\"market\"\n:\"M\", \"bids\" : [ [ \"1\" , 2 ] , [3,4] ] , \"asks\":[ ] } \n";
    assert_eq!(parse(raw).as_deref(), Some("book|M|100000000:200000000,300000000:400000000|"));
    for bad in ["\x0c", "\x0b", "\u{a0}", "\u{feff}", "\u{2028}"] {
        assert_eq!(parse(format!("{bad}{{{DEPOSIT}}}").as_bytes()), None, "{bad:?}");
        assert_eq!(parse(format!("{{{DEPOSIT}}}{bad}").as_bytes()), None, "{bad:?}");
        assert_eq!(parse(format!("{{{DEPOSIT},{bad}\"x\":1}}").as_bytes()), None, "{bad:?}");
    }
    assert_eq!(parse(format!("{{{DEPOSIT}}} x").as_bytes()), None);
    assert_eq!(parse(format!("{{{DEPOSIT}}}{{}}").as_bytes()), None);
}

#[test]
fn unknown_fields_are_validated_and_ignored() {
    let ok = Some("deposit|a|100000000".to_string());
    for extra in [
        r#""x":1"#,
        r#""x":-0.5e+10"#,
        r#""x":1E-400"#,
        r#""x":true,"y":false,"z":null"#,
        r#""x":"anything \u00e9 goes""#.replace(r"\u00e9", "é").as_str(),
        r#""x":[]"#,
        r#""x":{}"#,
        r#""x":[1,"2",[3.5,{"a":[null]}],{"b":{"c":true}}]"#,
        r#""x":{"a":1,"a":2}"#,
        r#""x":1,"x":2"#,
        r#""":0"#,
        r#""é":0"#,
        "\"x\":\"\x7f\"",
    ] {
        assert_eq!(with_extra(extra), ok, "{extra}");
    }
    for extra in [
        r#""x":01"#,
        r#""x":-"#,
        r#""x":1."#,
        r#""x":.5"#,
        r#""x":1e"#,
        r#""x":+1"#,
        r#""x":NaN"#,
        r#""x":Infinity"#,
        r#""x":tru"#,
        r#""x":nul"#,
        r#""x":[1,]"#,
        r#""x":[1 2]"#,
        r#""x":{"a":1,}"#,
        r#""x":{"a"}"#,
        r#""x":{1:2}"#,
        r#""x":'a'"#,
        r#""x":"unterminated}"#,
        r#""x""#,
        "\"x\":\"a\x01b\"",
        "\"x\":\"a\tb\"",
    ] {
        assert_eq!(with_extra(extra), None, "{extra}");
    }
    assert_eq!(parse(format!("{{{DEPOSIT},}}").as_bytes()), None);
    assert_eq!(parse(format!("{{{DEPOSIT}").as_bytes()), None);
}

#[test]
fn escapes_are_none() {
    // Python accepts all of these; we leave them to it.
    assert_eq!(with_extra(r#""x":"a\nb""#), None);
    assert_eq!(with_extra(r#""x":"\"""#), None);
    assert_eq!(with_extra(r#""x\u0079":1"#), None);
    assert_eq!(parse(br#"{"type":"deposit","account":"\u0061","amount":"1"}"#), None);
    assert_eq!(parse(br#"{"typ\u0065":"deposit","account":"a","amount":"1"}"#), None);
    assert_eq!(parse(br#"{"type":"deposit","account":"a","amount":"\u0031"}"#), None);
    assert_eq!(parse(br#"{"type":"deposit","account":"a\\b","amount":"1"}"#), None);
    // A slash is not special: only its escaped form is.
    assert_eq!(parse(br#"{"type":"deposit","account":"a/b","amount":"1"}"#).as_deref(), Some("deposit|a/b|100000000"));
}

#[test]
fn duplicate_keys() {
    for raw in [
        r#"{"type":"deposit","type":"deposit","account":"a","amount":"1"}"#,
        r#"{"type":"deposit","account":"a","amount":"1","amount":"2"}"#,
        r#"{"type":"deposit","account":"a","amount":"1","ts":1,"ts":1}"#,
        // Recognised names count even where the type does not use them.
        r#"{"type":"deposit","account":"a","amount":"1","price":1,"price":1}"#,
        r#"{"type":"book","market":"M","bids":[],"bids":[]}"#,
    ] {
        assert_eq!(parse(raw.as_bytes()), None, "{raw}");
    }
    // Other names repeat harmlessly: Python ignores them either way.
    assert_eq!(with_extra(r#""note":1,"note":"2""#).as_deref(), Some("deposit|a|100000000"));
}

#[test]
fn floats_are_none_in_every_num_field() {
    for float in ["1.0", "1e3", "1E3", "-0.5", "2.5e-1", "1e+2", "0.0"] {
        assert_eq!(amount(float), None, "{float}");
        assert_eq!(fee(float), None, "{float}");
        for field in ["imr", "mmr", "liq_fee", "max_oracle_move"] {
            let mut fields = vec![("imr", "1"), ("mmr", "1"), ("liq_fee", "0")];
            fields.retain(|(name, _)| *name != field);
            fields.push((field, float));
            let body: Vec<String> = fields.iter().map(|(k, v)| format!(r#""{k}":{v}"#)).collect();
            let raw = format!(r#"{{"type":"market","market":"M",{}}}"#, body.join(","));
            assert_eq!(parse(raw.as_bytes()), None, "{raw}");
        }
        let raw = format!(r#"{{"type":"book","market":"M","bids":[[{float},1]]}}"#);
        assert_eq!(parse(raw.as_bytes()), None, "{raw}");
        let raw = format!(r#"{{"type":"book","market":"M","asks":[[1,{float}]]}}"#);
        assert_eq!(parse(raw.as_bytes()), None, "{raw}");
        let raw = format!(r#"{{{DEPOSIT},"ts":{float}}}"#);
        assert_eq!(parse(raw.as_bytes()), None, "{raw}");
    }
}

#[test]
fn decimal_strings_and_bounds() {
    const MAX: i128 = 100_000_000_000_000_000_000_000;
    assert_eq!(amount(r#""1000000000000000""#), Some(MAX));
    assert_eq!(amount("1000000000000000"), Some(MAX));
    assert_eq!(amount(r#""1000000000000000.0""#), Some(MAX));
    assert_eq!(amount(r#""1000000000000000.00000000""#), Some(MAX));
    assert_eq!(amount(r#""1000000000000000.00000001""#), None);
    assert_eq!(amount(r#""999999999999999.99999999""#), Some(MAX - 1));
    assert_eq!(amount("1000000000000001"), None);
    assert_eq!(amount("10000000000000000"), None);
    assert_eq!(amount(r#""10000000000000000""#), None);
    assert_eq!(amount(&format!("\"{}1.5\"", "0".repeat(60))), Some(150_000_000));
    assert_eq!(amount(&format!("\"{}\"", "9".repeat(40))), None);
    assert_eq!(amount(&"9".repeat(40)), None);
    assert_eq!(amount(r#""007.50""#), Some(750_000_000));
    assert_eq!(amount(r#""0.00000001""#), Some(1));
    assert_eq!(amount(r#""12.3""#), Some(1_230_000_000));
    assert_eq!(fee(r#""-1000000000000000""#), Some(-MAX));
    assert_eq!(fee("-1000000000000000"), Some(-MAX));
    assert_eq!(fee(r#""-1000000000000000.00000001""#), None);
    assert_eq!(fee("-1000000000000001"), None);
    for bad in [
        r#""""#,
        r#""-""#,
        r#""+1""#,
        r#"" 1""#,
        r#""1 ""#,
        r#""1.""#,
        r#"".5""#,
        r#""-.5""#,
        r#""1.123456789""#,
        r#""1e3""#,
        r#""1,5""#,
        r#""0x10""#,
        r#""--1""#,
        r#""1.2.3""#,
        r#""1.-2""#,
        r#""NaN""#,
        r#""Infinity""#,
        "\"\u{663}\"",
        "\"\u{ff11}\"",
        r#""1_000""#,
    ] {
        assert_eq!(amount(bad), None, "{bad}");
        assert_eq!(fee(bad), None, "{bad}");
    }
}

#[test]
fn signs_and_zero() {
    assert_eq!(fee(r#""-0.005""#), Some(-500_000));
    assert_eq!(fee("-3"), Some(-300_000_000));
    assert_eq!(fee(r#""-0""#), Some(0));
    assert_eq!(fee("-0"), Some(0));
    assert_eq!(fee("0"), Some(0));
    assert_eq!(fee(r#""0.00000000""#), Some(0));
    // Amounts, prices and quantities must be > 0.
    for zero_or_negative in ["0", "-0", r#""0""#, r#""-0.0""#, "-1", r#""-0.00000001""#] {
        assert_eq!(amount(zero_or_negative), None, "{zero_or_negative}");
    }
    let fill = |price: &str, qty: &str| {
        let raw = format!(
            r#"{{"type":"fill","fill_id":"f","market":"M","price":{price},"qty":{qty},"buyer":"a","seller":"b"}}"#
        );
        parse(raw.as_bytes())
    };
    assert!(fill("1", "1").is_some());
    assert_eq!(fill("0", "1"), None);
    assert_eq!(fill("1", r#""-1""#), None);
    assert_eq!(parse(br#"{"type":"oracle","market":"M","price":"-5"}"#), None);
}

#[test]
fn market_ranges() {
    let market = |imr: &str, mmr: &str, liq: &str, extra: &str| {
        let raw = format!(r#"{{"type":"market","market":"M","imr":"{imr}","mmr":"{mmr}","liq_fee":"{liq}"{extra}}}"#);
        parse(raw.as_bytes())
    };
    assert!(market("1", "1", "0", "").is_some());
    assert!(market("0.00000001", "0.00000001", "0.99999999", "").is_some());
    assert_eq!(market("1.00000001", "1", "0", ""), None);
    assert_eq!(market("0.1", "0.10000001", "0", ""), None);
    assert_eq!(market("0.1", "0", "0", ""), None);
    assert_eq!(market("0.1", "-0.1", "0", ""), None);
    assert_eq!(market("0.1", "0.05", "1", ""), None);
    assert_eq!(market("0.1", "0.05", "-0.00000001", ""), None);
    assert_eq!(
        market("0.1", "0.05", "0", r#","max_oracle_move":"1000""#).as_deref(),
        Some("market|M|10000000|5000000|0|Some(100000000000)")
    );
    assert_eq!(market("0.1", "0.05", "0", r#","max_oracle_move":"0""#), None);
    assert_eq!(market("0.1", "0.05", "0", r#","max_oracle_move":null"#), None);
}

#[test]
fn book_levels_keep_input_order_unaggregated() {
    let raw =
        br#"{"type":"book","market":"M","bids":[["100","1"],[99,"2"],["100",3]],"asks":[["101","0.5"],["101","0.5"]]}"#;
    let Some(Input::Book { market, bids, asks }) = parse_input(raw) else { panic!("not parsed") };
    assert_eq!(market, "M");
    let e8 = |v: i128| v * E8;
    assert_eq!(bids, vec![(e8(100), e8(1)), (e8(99), e8(2)), (e8(100), e8(3))]);
    assert_eq!(asks, vec![(e8(101), 50_000_000), (e8(101), 50_000_000)]);
    let Some(Input::Book { bids, asks, .. }) = parse_input(br#"{"type":"book","market":"M"}"#) else {
        panic!("not parsed")
    };
    assert!(bids.is_empty() && asks.is_empty());
}

#[test]
fn ts_bounds() {
    let ts = |value: &str| parse(format!("{{{DEPOSIT},\"ts\":{value}}}").as_bytes());
    for ok in ["0", "-0", "1700000000000000000", "9223372036854775807", "-9223372036854775808"] {
        assert!(ts(ok).is_some(), "{ok}");
    }
    for bad in [
        "9223372036854775808",
        "-9223372036854775809",
        "18446744073709551615",
        "99999999999999999999",
        "100000000000000000000000000000",
        "1.0",
        "1e3",
        r#""1""#,
        "null",
        "true",
        "[]",
    ] {
        assert_eq!(ts(bad), None, "{bad}");
    }
}

#[test]
fn ids() {
    let deposit = |account: &str| parse(format!(r#"{{"type":"deposit","account":"{account}","amount":1}}"#).as_bytes());
    assert_eq!(deposit("élève 😀").as_deref(), Some("deposit|élève 😀|100000000"));
    assert_eq!(deposit("\u{2028}\u{7f}").as_deref(), Some("deposit|\u{2028}\u{7f}|100000000"));
    assert_eq!(deposit(" ").as_deref(), Some("deposit| |100000000"));
    assert_eq!(deposit(""), None);
    assert_eq!(deposit("a\u{1}"), None);
    // Invalid UTF-8 anywhere, even in an unknown field.
    assert_eq!(parse(b"{\"type\":\"deposit\",\"account\":\"\xff\",\"amount\":1}"), None);
    assert_eq!(parse(b"{\"type\":\"deposit\",\"account\":\"a\",\"amount\":1,\"x\":\"\xed\xa0\x80\"}"), None);
    assert_eq!(parse(b"{\"type\":\"deposit\",\"account\":\"a\",\"amount\":1,\"x\":\"\xc0\x80\"}"), None);
}

#[test]
fn nesting_limit_is_64_for_the_whole_document() {
    // The input object is level 1: an unknown array value may nest 63 more.
    let nested = |n: usize| format!(r#""x":{}{}"#, "[".repeat(n), "]".repeat(n));
    assert!(with_extra(&nested(63)).is_some());
    assert_eq!(with_extra(&nested(64)), None);
    let objects = |n: usize| format!(r#""x":{}1{}"#, r#"{"a":"#.repeat(n), "}".repeat(n));
    assert!(with_extra(&objects(63)).is_some());
    assert_eq!(with_extra(&objects(64)), None);
    assert_eq!(with_extra(&nested(100_000)), None);
}

#[test]
fn huge_numbers_in_unknown_fields_are_ignored() {
    // Python ignores them (msgspec skips them; the slow path defuses huge integers).
    for number in [
        "9".repeat(5000),
        format!("-{}", "1".repeat(4300)),
        format!("1.{}", "0".repeat(5000)),
        format!("1e{}", "9".repeat(400)),
    ] {
        assert!(with_extra(&format!(r#""x":{number}"#)).is_some());
        assert!(with_extra(&format!(r#""x":[{number}]"#)).is_some());
    }
}

#[test]
fn prefixes_of_valid_inputs_are_none() {
    for &(raw, python, gap) in TABLE {
        if gap || python == "REJECT" {
            continue;
        }
        let end = raw.iter().rposition(|&c| c == b'}').unwrap();
        for cut in 0..end {
            assert_eq!(parse(&raw[..cut]), None, "{:?}", String::from_utf8_lossy(&raw[..cut]));
        }
    }
}

#[test]
fn first_special_finds_the_first_special_byte() {
    let special = |c: u8| c == b'"' || c == b'\\' || c < 0x20;
    // Every byte value at every position of a buffer, after plain or high bytes, with
    // a second special byte further on (the SWAR borrow must not hide the first).
    for filler in [b'a', 0x80, 0xff, 0x21, 0x5d] {
        for len in 0..20 {
            for pos in 0..len {
                for c in 0..=255u8 {
                    let mut buf = vec![filler; len];
                    buf[pos] = c;
                    if pos + 1 < len {
                        buf[pos + 1] = 0;
                    }
                    let expected = if special(c) { pos } else { buf.iter().position(|&b| special(b)).unwrap_or(len) };
                    assert_eq!(first_special(&buf, 0), expected, "{buf:?}");
                    assert_eq!(first_special(&buf, pos), expected.max(pos), "{buf:?}");
                }
            }
        }
    }
}

#[test]
fn decimal_parser_directly() {
    assert_eq!(parse_decimal_e8(b"0"), Some(0));
    assert_eq!(parse_decimal_e8(b"-0.1"), Some(-10_000_000));
    assert_eq!(parse_decimal_e8(b"1.2345678"), Some(123_456_780));
    assert_eq!(parse_decimal_e8(b"00000000000000001000000000000000"), Some(MAX_WIRE_E8));
    assert_eq!(parse_decimal_e8(b"-"), None);
    assert_eq!(parse_decimal_e8(b""), None);
    assert_eq!(int_e8(b"-0"), Some(0));
    assert_eq!(int_e8(b"-1000000000000000"), Some(-MAX_WIRE_E8));
    assert_eq!(int_e8(b"-"), None);
}

// Bytes printed by `msgspec.json.Encoder().encode(s)`.
const ASCII: [&[u8]; 128] = [
    b"\"\\u0000\"",
    b"\"\\u0001\"",
    b"\"\\u0002\"",
    b"\"\\u0003\"",
    b"\"\\u0004\"",
    b"\"\\u0005\"",
    b"\"\\u0006\"",
    b"\"\\u0007\"",
    b"\"\\b\"",
    b"\"\\t\"",
    b"\"\\n\"",
    b"\"\\u000b\"",
    b"\"\\f\"",
    b"\"\\r\"",
    b"\"\\u000e\"",
    b"\"\\u000f\"",
    b"\"\\u0010\"",
    b"\"\\u0011\"",
    b"\"\\u0012\"",
    b"\"\\u0013\"",
    b"\"\\u0014\"",
    b"\"\\u0015\"",
    b"\"\\u0016\"",
    b"\"\\u0017\"",
    b"\"\\u0018\"",
    b"\"\\u0019\"",
    b"\"\\u001a\"",
    b"\"\\u001b\"",
    b"\"\\u001c\"",
    b"\"\\u001d\"",
    b"\"\\u001e\"",
    b"\"\\u001f\"",
    b"\" \"",
    b"\"!\"",
    b"\"\\\"\"",
    b"\"#\"",
    b"\"$\"",
    b"\"%\"",
    b"\"&\"",
    b"\"'\"",
    b"\"(\"",
    b"\")\"",
    b"\"*\"",
    b"\"+\"",
    b"\",\"",
    b"\"-\"",
    b"\".\"",
    b"\"/\"",
    b"\"0\"",
    b"\"1\"",
    b"\"2\"",
    b"\"3\"",
    b"\"4\"",
    b"\"5\"",
    b"\"6\"",
    b"\"7\"",
    b"\"8\"",
    b"\"9\"",
    b"\":\"",
    b"\";\"",
    b"\"<\"",
    b"\"=\"",
    b"\">\"",
    b"\"?\"",
    b"\"@\"",
    b"\"A\"",
    b"\"B\"",
    b"\"C\"",
    b"\"D\"",
    b"\"E\"",
    b"\"F\"",
    b"\"G\"",
    b"\"H\"",
    b"\"I\"",
    b"\"J\"",
    b"\"K\"",
    b"\"L\"",
    b"\"M\"",
    b"\"N\"",
    b"\"O\"",
    b"\"P\"",
    b"\"Q\"",
    b"\"R\"",
    b"\"S\"",
    b"\"T\"",
    b"\"U\"",
    b"\"V\"",
    b"\"W\"",
    b"\"X\"",
    b"\"Y\"",
    b"\"Z\"",
    b"\"[\"",
    b"\"\\\\\"",
    b"\"]\"",
    b"\"^\"",
    b"\"_\"",
    b"\"`\"",
    b"\"a\"",
    b"\"b\"",
    b"\"c\"",
    b"\"d\"",
    b"\"e\"",
    b"\"f\"",
    b"\"g\"",
    b"\"h\"",
    b"\"i\"",
    b"\"j\"",
    b"\"k\"",
    b"\"l\"",
    b"\"m\"",
    b"\"n\"",
    b"\"o\"",
    b"\"p\"",
    b"\"q\"",
    b"\"r\"",
    b"\"s\"",
    b"\"t\"",
    b"\"u\"",
    b"\"v\"",
    b"\"w\"",
    b"\"x\"",
    b"\"y\"",
    b"\"z\"",
    b"\"{\"",
    b"\"|\"",
    b"\"}\"",
    b"\"~\"",
    b"\"\x7f\"",
];
const OTHER: &[(&str, &[u8])] = &[
    ("\u{e9}", b"\"\xc3\xa9\""),
    ("\u{2028}", b"\"\xe2\x80\xa8\""),
    ("\u{2029}", b"\"\xe2\x80\xa9\""),
    ("\u{1f600}", b"\"\xf0\x9f\x98\x80\""),
    ("\u{80}", b"\"\xc2\x80\""),
    ("\u{ff}", b"\"\xc3\xbf\""),
    ("\u{feff}", b"\"\xef\xbb\xbf\""),
    ("\u{10ffff}", b"\"\xf4\x8f\xbf\xbf\""),
    ("a\"b\\c/d", b"\"a\\\"b\\\\c/d\""),
    ("BTC-PERP", b"\"BTC-PERP\""),
    ("", b"\"\""),
    ("x\u{0}\u{1f}\u{7f}y", b"\"x\\u0000\\u001f\x7fy\""),
    ("\u{20ac}\u{a}\u{e9}\u{9}", b"\"\xe2\x82\xac\\n\xc3\xa9\\t\""),
];

#[test]
fn write_json_str_matches_msgspec() {
    for (c, expected) in ASCII.iter().enumerate() {
        let mut out = Vec::new();
        write_json_str(&mut out, &char::from(c as u8).to_string());
        assert_eq!(out.as_slice(), *expected, "code point {c:#x}");
    }
    for &(s, expected) in OTHER {
        let mut out = Vec::new();
        write_json_str(&mut out, s);
        assert_eq!(out.as_slice(), expected, "{s:?}");
    }
    // Appends; does not clear.
    let mut out = b"x:".to_vec();
    write_json_str(&mut out, "a\"");
    assert_eq!(out, b"x:\"a\\\"\"");
}
