"""``clearing report``: replay a journal and write a self-contained HTML audit report.

``write_report(journal_dir, out_path)`` does the whole job; ``collect_journal`` and
``render_html`` are its two halves (replay and verify, then draw), and ``summary`` gives
the headline numbers as exact decimal strings.
"""

from clearing.report._collect import (
    ReportData,
    collect_journal,
    long_open_interest_e8,
    parse_scaled,
)
from clearing.report._command import (
    report_command,
    resolve_journal_dir,
    save_report,
    write_report,
)
from clearing.report._figures import MONEY_UNIT
from clearing.report._figures_v2 import FIGURE_IDS_V2
from clearing.report._render import (
    FIGURE_IDS,
    display_e16,
    plural,
    render_html,
    replay_sentence,
    summary,
)

__all__ = [
    "FIGURE_IDS",
    "FIGURE_IDS_V2",
    "MONEY_UNIT",
    "ReportData",
    "collect_journal",
    "display_e16",
    "long_open_interest_e8",
    "parse_scaled",
    "plural",
    "render_html",
    "replay_sentence",
    "report_command",
    "resolve_journal_dir",
    "save_report",
    "summary",
    "write_report",
]
