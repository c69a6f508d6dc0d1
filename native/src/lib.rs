//! `clearing_native`: the clearing engine's core in Rust, behind the same contract as the
//! pure-Python `clearing.engine` (which stays the reference). Python keeps the edges that
//! are rare and wordy: decoding inputs the fast parser is unsure of, and the text of
//! reject details; this crate does the per-input work.

use pyo3::exceptions::{PyAssertionError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple, PyType};

mod block;
mod book;
mod engine;
mod funding;
mod index;
mod journal;
mod json_in;
mod keys;
mod ledger;
mod num;
mod rules_v2;
mod snapshot;
mod state;
mod views;
mod waterfall_v2;

use engine::Engine;
use json_in::{parse_input_rules, FillIn, Input};

/// A panic payload's message.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else if let Some(text) = payload.downcast_ref::<&str>() {
        text.to_string()
    } else {
        "panic from Rust code".to_string()
    }
}

/// The Python exception for a panic: a failed `Ledger::assert_balanced` is the engine's
/// `InvariantViolation` (an AssertionError if that cannot be imported); any other panic
/// is pyo3's PanicException, as pyo3 itself raises at the boundary.
fn panic_error(py: Python<'_>, payload: &(dyn std::any::Any + Send)) -> PyErr {
    let message = panic_message(payload);
    if !message.starts_with(ledger::INVARIANT_PANIC) {
        return pyo3::panic::PanicException::new_err((message,));
    }
    let class = py
        .import("clearing.engine")
        .and_then(|module| module.getattr("InvariantViolation"))
        .and_then(|class| class.downcast_into::<PyType>().map_err(PyErr::from));
    match class {
        Ok(class) => PyErr::from_type(class, (message,)),
        Err(_) => PyAssertionError::new_err(message),
    }
}

/// `Core.apply` returned this: the fast parser was unsure; decode in Python and call
/// `apply_parsed` (or `skip` for a reject). No seq was consumed.
const DEFER: i64 = 0;

#[pyclass(module = "clearing_native")]
struct Core {
    engine: Engine,
    /// Set while an input is being applied: still set afterwards only if that input
    /// panicked (an arithmetic overflow, or a failed invariant) half-way, and then the
    /// state is not trusted.
    busy: bool,
}

#[pymethods]
impl Core {
    /// An empty ledger under a rules version (SPEC §9): 1 (the default) or 2.
    #[new]
    #[pyo3(signature = (rules_version = 1))]
    fn new(rules_version: u8) -> PyResult<Self> {
        if !engine::RULES_VERSIONS.contains(&rules_version) {
            return Err(PyValueError::new_err(format!(
                "unknown rules version {rules_version}; this core implements 1, 2"
            )));
        }
        Ok(Core { engine: Engine::with_rules(rules_version), busy: false })
    }

    /// The ledger's rules version, fixed at creation (or by the snapshot it was loaded from).
    #[getter]
    fn get_rules_version(&self) -> u8 {
        self.engine.rules
    }

    /// True: a mark move visits every holder of the market (the full-scan baseline the
    /// benchmarks compare against); False (the default): only those the index names.
    /// The Python core's `Engine(liquidation_scan=...)` is the same switch.
    #[getter]
    fn get_liquidation_scan(&self) -> bool {
        self.engine.scan
    }

    #[setter]
    fn set_liquidation_scan(&mut self, liquidation_scan: bool) {
        self.engine.scan = liquidation_scan;
    }

    /// Inputs applied so far (rejects included).
    #[getter]
    fn get_seq(&self) -> u64 {
        self.engine.seq
    }

    /// Set the input counter (tools compare states with the counter set aside, as they
    /// do on the Python core's `Engine.seq`).
    #[setter]
    fn set_seq(&mut self, seq: u64) {
        self.engine.seq = seq;
    }

    /// The Kafka daemon's batch step (`block.rs`): apply `payloads[start:]` in order as
    /// `apply` does, extend the journal chain from `prev_hash` (`sources[i]` is input i's
    /// journal source) and write each input's journal record as msgspec writes `Record`,
    /// back to back. Stops before an input this core does not finish alone.
    ///
    /// Returns `(next, code, records, head_hash, outputs, kinds)`: `next` = index of the
    /// first input not done here (`len(payloads)` when all are), `code` = its verdict
    /// (`DEFER`: nothing applied; 4..9: refused, seq counted, Python writes the reject; -1
    /// when all are done), the encoded records (one bytes each), the chain hash after the
    /// last of them, `(index, [event JSON bytes])` for each input with outputs, and each
    /// record's input type as one byte (1 market, 2 deposit, 3 withdraw, 4 fill, 5 oracle,
    /// 6 book).
    #[allow(clippy::type_complexity)]
    fn journal_run<'py>(
        &mut self,
        py: Python<'py>,
        payloads: &Bound<'py, PyList>,
        sources: &Bound<'py, PyList>,
        start: usize,
        prev_hash: &[u8],
    ) -> PyResult<(usize, i64, Bound<'py, PyList>, Bound<'py, PyBytes>, Bound<'py, PyList>, Bound<'py, PyBytes>)> {
        self.guard()?;
        let n = payloads.len();
        if sources.len() != n || start > n {
            return Err(PyValueError::new_err(format!(
                "journal_run: {n} payloads, {} sources, start {start}",
                sources.len()
            )));
        }
        let prev: [u8; 32] =
            prev_hash.try_into().map_err(|_| PyValueError::new_err("journal_run: prev_hash must be 32 bytes"))?;
        let mut items: Vec<(Bound<'py, PyBytes>, Bound<'py, pyo3::types::PyString>)> = Vec::with_capacity(n - start);
        let mut size = 0usize;
        for i in start..n {
            let payload = payloads.get_item(i)?.downcast_into::<PyBytes>()?;
            let source = sources.get_item(i)?.downcast_into::<pyo3::types::PyString>()?;
            size += payload.as_bytes().len() + 64;
            items.push((payload, source));
        }
        let mut texts: Vec<&str> = Vec::with_capacity(items.len());
        for (_, source) in &items {
            texts.push(source.to_str()?);
        }
        // A panic leaves `busy` set: the batch is abandoned and later calls are refused.
        self.busy = true;
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            block::apply_run(
                &mut self.engine,
                items.iter().zip(&texts).map(|((payload, _), text)| (payload.as_bytes(), text.as_bytes())),
                start,
                prev,
                size,
            )
        }))
        .map_err(|payload| panic_error(py, &*payload))?;
        self.busy = false;
        let (next, code) = match run.stop {
            block::Stop::Done => (n, -1),
            block::Stop::Deferred(i) => (i, DEFER),
            block::Stop::Refused(i, code) => (i, code),
        };
        let outputs = PyList::empty(py);
        for (index, events) in &run.outputs {
            let events = PyList::new(py, events.iter().map(|event| PyBytes::new(py, event)))?;
            outputs.append((index, events))?;
        }
        let mut begin = 0;
        let records = PyList::new(
            py,
            run.ends.iter().map(|&end| {
                let record = PyBytes::new(py, &run.records[begin..end]);
                begin = end;
                record
            }),
        )?;
        Ok((next, code, records, PyBytes::new(py, &run.head_hash), outputs, PyBytes::new(py, &run.kinds)))
    }

    /// Apply one raw input. Returns None (applied, no outputs), a list of output events as
    /// JSON bytes, a refusal code 4..9 (REJECT_REASONS[code - 1]; seq consumed, state
    /// untouched) or 0 (DEFER: not parsed here, nothing consumed).
    fn apply(&mut self, py: Python<'_>, raw: &[u8]) -> PyResult<PyObject> {
        self.guard()?;
        match parse_input_rules(raw, self.engine.rules) {
            None => Ok(DEFER.into_pyobject(py)?.into_any().unbind()),
            Some(input) => self.run(py, &input),
        }
    }

    /// Apply an input Python decoded and validated (a `Parsed*` tuple's fields), with the
    /// same results as `apply`.
    fn apply_parsed(&mut self, py: Python<'_>, kind: &str, fields: &Bound<'_, PyTuple>) -> PyResult<PyObject> {
        self.guard()?;
        let s = |i: usize| -> PyResult<String> { fields.get_item(i)?.extract() };
        let n = |i: usize| -> PyResult<i128> { fields.get_item(i)?.extract() };
        let levels = |i: usize| -> PyResult<Vec<(i128, i128)>> { fields.get_item(i)?.extract() };
        match kind {
            "fill" => {
                let (fill_id, market, buyer, seller) = (s(0)?, s(1)?, s(4)?, s(5)?);
                let fill = FillIn {
                    fill_id: &fill_id,
                    market: &market,
                    price_e8: n(2)?,
                    qty_e8: n(3)?,
                    buyer: &buyer,
                    seller: &seller,
                    buyer_fee_e8: n(6)?,
                    seller_fee_e8: n(7)?,
                };
                self.run(py, &Input::Fill(fill))
            }
            "oracle" => {
                let market = s(0)?;
                self.run(py, &Input::Oracle { market: &market, price_e8: n(1)? })
            }
            "deposit" | "withdraw" => {
                let account = s(0)?;
                let amount_e8 = n(1)?;
                let input = if kind == "deposit" {
                    Input::Deposit { account: &account, amount_e8 }
                } else {
                    Input::Withdraw { account: &account, amount_e8 }
                };
                self.run(py, &input)
            }
            "book" => {
                let market = s(0)?;
                self.run(py, &Input::Book { market: &market, bids: levels(1)?, asks: levels(2)? })
            }
            "market" => {
                let market = s(0)?;
                let max_oracle_move_e8: Option<i128> = fields.get_item(4)?.extract()?;
                // A version-2 market (`ParsedMarketV2`) has SPEC §9's five fields after these.
                let v2 = if fields.len() > 5 { Some(market_v2(fields)?) } else { None };
                let input = Input::Market {
                    market: &market,
                    imr_e8: n(1)?,
                    mmr_e8: n(2)?,
                    liq_fee_e8: n(3)?,
                    max_oracle_move_e8,
                    v2,
                };
                self.run(py, &input)
            }
            "funding" => {
                let market = s(0)?;
                self.run(py, &Input::Funding { market: &market, rate_e8: n(1)? })
            }
            _ => Err(PyValueError::new_err(format!("unknown input kind {kind:?}"))),
        }
    }

    /// The journal replay loop in one call: verify frames exactly as `scan_frames` does
    /// (same arguments, same `next_offset, next_seq, last_hash, problem`) and apply each
    /// record's payload as it passes, as `apply` would. The batch ends early, after the
    /// frame, at a record this core does not finish alone (`DEFER`, or a refusal whose
    /// reject Python writes): that record comes back as `pending`, `(seq, source, payload,
    /// outputs, chain_hash, code)` with code 0 (not applied: apply it in Python) or the
    /// refusal code (applied: its seq is counted; write the reject with it).
    ///
    /// Returns `(applied, events, derived, divergences, first_divergence, pending, error,
    /// next_offset, next_seq, last_hash, problem)`: inputs applied here, their output
    /// events, those events joined as the journal records them (each followed by a
    /// newline), and, with `verify`, how many records that recorded outputs re-derived
    /// different ones, the first as `(seq, source, recorded, derived)`. `error` is the
    /// exception of an input that stopped the engine half-way (raise it after using the
    /// rest: the inputs before it were applied). With `stop_at_divergence` the batch
    /// ends after the first record whose outputs diverge. With `all_outputs_recorded`
    /// (a journal whose writer recorded every input's outputs, as the Kafka daemon does)
    /// a record that recorded none must re-derive none too; without it, an empty one
    /// means "not recorded" (a local journal written before outputs were) and is not
    /// compared.
    #[pyo3(signature = (buf, offset, end, seq, prev_hash, stop_seq, max_records, max_bytes, verify, stop_at_divergence = false, all_outputs_recorded = false))]
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn replay_frames<'py>(
        &mut self,
        py: Python<'py>,
        buf: pyo3::buffer::PyBuffer<u8>,
        offset: usize,
        end: usize,
        seq: u64,
        prev_hash: &[u8],
        stop_seq: u64,
        max_records: usize,
        max_bytes: usize,
        verify: bool,
        stop_at_divergence: bool,
        all_outputs_recorded: bool,
    ) -> PyResult<Bound<'py, PyTuple>> {
        self.guard()?;
        let data = journal::buffer_bytes(&buf)?;
        journal::check_window("replay_frames", data, offset, end, max_records, max_bytes)?;
        let mut applied = 0u64;
        let mut events = 0u64;
        let mut derived: Vec<u8> = Vec::with_capacity(4096);
        let mut divergences = 0u64;
        let mut first_divergence: Option<(u64, std::ops::Range<usize>, std::ops::Range<usize>, Vec<u8>)> = None;
        let mut pending: Option<(journal::Good, i64)> = None;
        let mut panic: Option<Box<dyn std::any::Any + Send>> = None;
        let mut out: Vec<Vec<u8>> = Vec::new();
        let engine = &mut self.engine;
        let busy = &mut self.busy;
        let (next_offset, next_seq, last_hash, problem) = journal::scan_each_ahead(
            data,
            offset,
            end,
            seq,
            prev_hash,
            stop_seq,
            max_records,
            max_bytes,
            |data, good| {
                let payload = &data[good.payload.clone()];
                // A record that is not the engine's next seq goes to Python too (whose
                // loop decides what that means).
                let next = engine.seq.checked_add(1);
                let rules = engine.rules;
                let Some(input) = parse_input_rules(payload, rules).filter(|_| next == Some(good.seq)) else {
                    pending = Some((good, DEFER));
                    return false;
                };
                *busy = true;
                engine.seq += 1;
                out.clear();
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine.apply(&input, &mut out)));
                let result = match result {
                    Ok(result) => result,
                    Err(payload) => {
                        panic = Some(payload);
                        return false;
                    }
                };
                *busy = false;
                if let Err(refusal) = result {
                    pending = Some((good, refusal as i64));
                    return false;
                }
                applied += 1;
                events += out.len() as u64;
                let start = derived.len();
                for event in &out {
                    derived.extend_from_slice(event);
                    derived.push(b'\n');
                }
                let recorded = &data[good.outputs.clone()];
                if verify && (all_outputs_recorded || !recorded.is_empty()) && derived[start..] != *recorded {
                    divergences += 1;
                    if first_divergence.is_none() {
                        first_divergence =
                            Some((good.seq, good.source.clone(), good.outputs.clone(), derived[start..].to_vec()));
                    }
                    if stop_at_divergence {
                        return false;
                    }
                }
                true
            },
        );
        let first_divergence = match first_divergence {
            None => py.None(),
            Some((seq, source, recorded, derived)) => {
                let source = std::str::from_utf8(&data[source]).unwrap_or_default();
                (seq, source, PyBytes::new(py, &data[recorded]), PyBytes::new(py, &derived))
                    .into_pyobject(py)?
                    .into_any()
                    .unbind()
            }
        };
        let pending = match pending {
            None => py.None(),
            Some((good, code)) => {
                let source = std::str::from_utf8(&data[good.source.clone()]).unwrap_or_default();
                (
                    good.seq,
                    source,
                    PyBytes::new(py, &data[good.payload.clone()]),
                    PyBytes::new(py, &data[good.outputs.clone()]),
                    PyBytes::new(py, &data[good.chain_hash.clone()]),
                    code,
                )
                    .into_pyobject(py)?
                    .into_any()
                    .unbind()
            }
        };
        let error = match panic {
            None => py.None(),
            Some(payload) => {
                // As pyo3 turns a panic into an exception at the boundary (`apply`'s path).
                panic_error(py, &*payload).into_value(py).into_any()
            }
        };
        PyTuple::new(
            py,
            [
                applied.into_pyobject(py)?.into_any().unbind(),
                events.into_pyobject(py)?.into_any().unbind(),
                PyBytes::new(py, &derived).into_any().unbind(),
                divergences.into_pyobject(py)?.into_any().unbind(),
                first_divergence,
                pending,
                error,
                next_offset.into_pyobject(py)?.into_any().unbind(),
                next_seq.into_pyobject(py)?.into_any().unbind(),
                PyBytes::new(py, &last_hash).into_any().unbind(),
                pyo3::types::PyBool::new(py, problem).to_owned().into_any().unbind(),
            ],
        )
    }

    /// Count the seq of an input that Python rejected while decoding it.
    fn skip(&mut self) -> PyResult<()> {
        self.guard()?;
        self.engine.seq += 1;
        Ok(())
    }

    /// None if both SPEC invariants hold, else what is wrong.
    fn invariant_error(&self) -> Option<String> {
        self.engine.ledger.check_invariants().err()
    }

    /// None if the liquidation index could miss no account, else what is wrong.
    fn index_error(&self) -> Option<String> {
        self.engine.ledger.check_index().err()
    }

    /// The SPEC §8 state as canonical JSON bytes.
    fn state_json<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &state::state_json(&self.engine))
    }

    /// The snapshot document: byte-identical to `clearing.engine.persist.dump_state`.
    fn dump_state<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let bytes = py.allow_threads(|| snapshot::encode_state(&state::to_doc(&self.engine)));
        PyBytes::new(py, &bytes)
    }

    /// Rebuild a core from `dump_state` bytes (either core's).
    #[staticmethod]
    fn load_state(py: Python<'_>, data: &[u8]) -> PyResult<Core> {
        let engine = py
            .allow_threads(|| snapshot::decode_state(data).and_then(|doc| state::from_doc(doc)))
            .map_err(PyValueError::new_err)?;
        Ok(Core { engine, busy: false })
    }

    /// Accounts in the ledger, system accounts included (O(1)).
    fn account_count(&self) -> usize {
        self.engine.ledger.accounts.len()
    }

    /// Figures for metrics and reports: (accounts, positions, fund equity e16 as a decimal
    /// string, [(market, long open interest e8 as a decimal string, mark e8 or None)]).
    fn summary(&self) -> (usize, usize, String, Vec<(String, String, Option<String>)>) {
        state::summary(&self.engine)
    }

    /// The ledger figures the metrics export, in one pass (see `state::Figures`); money
    /// as Python ints in the engine's units (e16 cash, e8 quantities and marks).
    fn figures<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let f = state::figures(&self.engine);
        let big = |value: num::Int| -> PyResult<PyObject> { big_int(py, value) };
        let out = PyDict::new(py);
        out.set_item("accounts", f.accounts)?;
        out.set_item("fund_cash_e16", big(f.fund_cash)?)?;
        out.set_item("fund_equity_e16", big(f.fund_equity)?)?;
        out.set_item("fee_pool_cash_e16", big(f.fee_pool_cash)?)?;
        out.set_item("bad_debt_cash_e16", big(f.bad_debt_cash)?)?;
        let markets = PyList::empty(py);
        for (id, long_oi, mark, held, volatility, fund_share) in f.markets {
            let mark = match mark {
                Some(value) => big(value)?,
                None => py.None(),
            };
            markets.append((id, big(long_oi)?, mark, held, big(volatility)?, big(fund_share)?))?;
        }
        out.set_item("markets", markets)?;
        out.set_item("traders", f.traders)?;
        out.set_item("below_im", f.below_im)?;
        Ok(out)
    }

    /// One account for the read API as canonical JSON bytes, None if unknown.
    fn account_view<'py>(&self, py: Python<'py>, account: &str) -> Option<Bound<'py, PyBytes>> {
        views::account_view(&self.engine, account).map(|bytes| PyBytes::new(py, &bytes))
    }

    /// One market for the read API (book sides cut to `depth` levels), None if unknown.
    fn market_view<'py>(&self, py: Python<'py>, market: &str, depth: usize) -> Option<Bound<'py, PyBytes>> {
        views::market_view(&self.engine, market, depth).map(|bytes| PyBytes::new(py, &bytes))
    }

    /// The ranked lists for the read API, `limit` entries each at most.
    fn rankings<'py>(&self, py: Python<'py>, limit: usize) -> Bound<'py, PyBytes> {
        let bytes = py.allow_threads(|| views::rankings(&self.engine, limit));
        PyBytes::new(py, &bytes)
    }
}

impl Core {
    fn guard(&self) -> PyResult<()> {
        if self.busy {
            return Err(PyRuntimeError::new_err(
                "the native engine stopped half-way through an input (an arithmetic overflow \
                 past 256 bits, or a failed ledger invariant); its state can no longer be \
                 trusted: restart from the journal",
            ));
        }
        Ok(())
    }

    fn run(&mut self, py: Python<'_>, input: &Input<'_>) -> PyResult<PyObject> {
        self.busy = true;
        self.engine.seq += 1;
        let mut out = Vec::new();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.engine.apply(input, &mut out)))
            .map_err(|payload| panic_error(py, &*payload))?;
        self.busy = false;
        match result {
            Ok(()) if out.is_empty() => Ok(py.None()),
            Ok(()) => Ok(PyList::new(py, out.iter().map(|event| PyBytes::new(py, event)))?.into_any().unbind()),
            Err(refusal) => Ok((refusal as i64).into_pyobject(py)?.into_any().unbind()),
        }
    }
}

/// SPEC §9's fields of a `ParsedMarketV2` tuple (after its first five): liq_step, adl,
/// fund_share, vol_tiers ((sigma, share) pairs), vol_lambda, all e8.
fn market_v2(fields: &Bound<'_, PyTuple>) -> PyResult<ledger::MarketV2> {
    let n = |i: usize| -> PyResult<num::Int> { Ok(num::int(fields.get_item(i)?.extract::<i128>()?)) };
    let tiers: Vec<(i128, i128)> = fields.get_item(8)?.extract()?;
    Ok(ledger::MarketV2 {
        liq_step: n(5)?,
        adl: fields.get_item(6)?.extract()?,
        fund_share: n(7)?,
        vol_tiers: tiers.into_iter().map(|(sigma, share)| (num::int(sigma), num::int(share))).collect(),
        vol_lambda: n(9)?,
        vol: num::ZERO,
    })
}

/// A 256-bit amount as a Python int (through its decimal text: exact at any size).
fn big_int(py: Python<'_>, value: num::Int) -> PyResult<PyObject> {
    let int_type = py.get_type::<pyo3::types::PyInt>();
    Ok(int_type.call1((value.to_string(),))?.unbind())
}

#[pymodule]
fn clearing_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Core>()?;
    m.add_function(wrap_pyfunction!(journal::scan_frames, m)?)?;
    m.add("DEFER", DEFER)?;
    Ok(())
}
