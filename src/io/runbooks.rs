//! The runbook pages of Drover's own alerts (`docs/runbooks/`), built into the binary so that
//! the supervisor's HTTP server can serve them (`GET /runbooks/<page>`), the default target of
//! each alert's `runbook_url` (`alerts.runbook_base`).

/// Each page of [`crate::alerts::RUNBOOKS`] (and the index) by file name, with its text.
pub const PAGES: [(&str, &str); 10] = [
    ("README.md", include_str!("../../docs/runbooks/README.md")),
    ("latency-drift.md", include_str!("../../docs/runbooks/latency-drift.md")),
    ("job-running-long.md", include_str!("../../docs/runbooks/job-running-long.md")),
    ("sla-at-risk.md", include_str!("../../docs/runbooks/sla-at-risk.md")),
    ("class-stalled.md", include_str!("../../docs/runbooks/class-stalled.md")),
    ("quarantined.md", include_str!("../../docs/runbooks/quarantined.md")),
    ("class-paused.md", include_str!("../../docs/runbooks/class-paused.md")),
    ("suspect.md", include_str!("../../docs/runbooks/suspect.md")),
    ("slow.md", include_str!("../../docs/runbooks/slow.md")),
    ("many-look-bad.md", include_str!("../../docs/runbooks/many-look-bad.md")),
];

/// The text of a page, by its file name.
pub fn page(name: &str) -> Option<&'static str> {
    PAGES.iter().find(|(n, _)| *n == name).map(|(_, text)| *text)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_alert_drover_raises_has_its_page_built_in() {
        for (alert, file) in crate::alerts::RUNBOOKS {
            let text = super::page(file).unwrap_or_else(|| panic!("{alert}: {file} is not built in"));
            assert!(text.contains(alert), "{file} does not name {alert}");
            for part in ["## What it means", "## What Drover already did", "## What to check", "## How to undo"] {
                assert!(text.contains(part), "{file} lacks {part}");
            }
        }
    }
}
