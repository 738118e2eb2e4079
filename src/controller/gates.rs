//! `--feature-gates` as Flux's controllers take it (`Name=true,Other=false`), unknown gates refused.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// source-controller: `spec.serviceAccountName` on objects that authenticate to a cloud
    /// (default off).
    ObjectLevelWorkloadIdentity,
    /// apply-controller: an unset `${var}` without a default fails the build instead of
    /// becoming empty (default off, as in Flux).
    StrictPostBuildSubstitutions,
}

/// A gate a controller accepts, and its default.
type Known = (&'static str, Gate, bool);

/// The gates of the source-controller.
pub const SOURCE_GATES: &[Known] = &[(
    "ObjectLevelWorkloadIdentity",
    Gate::ObjectLevelWorkloadIdentity,
    false,
)];

/// The gates of the apply-controller.
pub const APPLY_GATES: &[Known] = &[(
    "StrictPostBuildSubstitutions",
    Gate::StrictPostBuildSubstitutions,
    false,
)];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeatureGates {
    enabled: Vec<Gate>,
}

impl FeatureGates {
    /// `--feature-gates` of the source-controller.
    pub fn parse_source(text: &str) -> Result<FeatureGates, String> {
        Self::parse(SOURCE_GATES, text)
    }

    /// `--feature-gates` of the apply-controller.
    pub fn parse_apply(text: &str) -> Result<FeatureGates, String> {
        Self::parse(APPLY_GATES, text)
    }

    fn parse(known: &[Known], text: &str) -> Result<FeatureGates, String> {
        let mut gates = FeatureGates {
            enabled: known
                .iter()
                .filter(|(_, _, on)| *on)
                .map(|(_, g, _)| *g)
                .collect(),
        };
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, value) = item
                .split_once('=')
                .ok_or_else(|| format!("feature gate '{item}' must be Name=true or Name=false"))?;
            let on: bool = value.trim().parse().map_err(|_| {
                format!("feature gate '{name}' must be true or false, not '{value}'")
            })?;
            let Some((_, gate, _)) = known.iter().find(|(n, _, _)| *n == name.trim()) else {
                let names: Vec<&str> = known.iter().map(|(n, _, _)| *n).collect();
                return Err(format!(
                    "unknown feature gate '{name}' (this controller knows: {})",
                    names.join(", ")
                ));
            };
            gates.enabled.retain(|g| g != gate);
            if on {
                gates.enabled.push(*gate);
            }
        }
        Ok(gates)
    }

    pub fn enabled(&self, gate: Gate) -> bool {
        self.enabled.contains(&gate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_parse_and_unknown_ones_are_refused() {
        assert!(
            !FeatureGates::parse_source("")
                .unwrap()
                .enabled(Gate::ObjectLevelWorkloadIdentity)
        );
        assert!(
            FeatureGates::parse_source("ObjectLevelWorkloadIdentity=true")
                .unwrap()
                .enabled(Gate::ObjectLevelWorkloadIdentity)
        );
        assert!(
            !FeatureGates::parse_source(
                "ObjectLevelWorkloadIdentity=true,ObjectLevelWorkloadIdentity=false"
            )
            .unwrap()
            .enabled(Gate::ObjectLevelWorkloadIdentity)
        );
        assert!(
            FeatureGates::parse_source("Nope=true")
                .unwrap_err()
                .contains("unknown feature gate 'Nope'")
        );
        assert!(FeatureGates::parse_source("ObjectLevelWorkloadIdentity").is_err());
        assert!(FeatureGates::parse_source("ObjectLevelWorkloadIdentity=yes").is_err());
    }

    #[test]
    fn each_controller_accepts_only_its_own_gates() {
        let strict = "StrictPostBuildSubstitutions=true";
        assert!(
            FeatureGates::parse_apply(strict)
                .unwrap()
                .enabled(Gate::StrictPostBuildSubstitutions)
        );
        assert!(
            !FeatureGates::parse_apply("")
                .unwrap()
                .enabled(Gate::StrictPostBuildSubstitutions)
        );
        assert!(FeatureGates::parse_source(strict).is_err());
        assert!(
            FeatureGates::parse_apply("ObjectLevelWorkloadIdentity=true")
                .unwrap_err()
                .contains("this controller knows: StrictPostBuildSubstitutions")
        );
    }
}
