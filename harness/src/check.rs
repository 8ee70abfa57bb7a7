//! The verdicts the benchmark and the chaos suite report: named checks,
//! each passed or failed with what was measured.

/// One named pass/fail check of a scenario.
#[derive(Debug, Clone)]
pub struct Check {
    /// The scenario it belongs to.
    pub scenario: String,
    /// What is checked.
    pub name: String,
    /// Passed.
    pub ok: bool,
    /// What was measured, for the report.
    pub detail: String,
}

impl Check {
    /// A check of `scenario`.
    pub fn new(scenario: &str, name: &str, ok: bool, detail: impl Into<String>) -> Check {
        Check {
            scenario: scenario.to_string(),
            name: name.to_string(),
            ok,
            detail: detail.into(),
        }
    }

    /// `[ok] name: detail` or `[FAIL] name: detail`.
    pub fn line(&self) -> String {
        format!(
            "[{}] {}: {}",
            if self.ok { "ok" } else { "FAIL" },
            self.name,
            self.detail
        )
    }
}
