//! `--feature-gates` as Flux's controllers take it: `Name=true,Other=false`. Gates this build
//! does not know are refused, not ignored.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// `spec.serviceAccountName` on objects that authenticate to a cloud (default off).
    ObjectLevelWorkloadIdentity,
}

const KNOWN: [(&str, Gate, bool); 1] = [(
    "ObjectLevelWorkloadIdentity",
    Gate::ObjectLevelWorkloadIdentity,
    false,
)];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeatureGates {
    enabled: Vec<Gate>,
}

impl FeatureGates {
    pub fn parse(text: &str) -> Result<FeatureGates, String> {
        let mut gates = FeatureGates {
            enabled: KNOWN
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
            let Some((_, gate, _)) = KNOWN.iter().find(|(n, _, _)| *n == name.trim()) else {
                let known: Vec<&str> = KNOWN.iter().map(|(n, _, _)| *n).collect();
                return Err(format!(
                    "unknown feature gate '{name}' (this build knows: {})",
                    known.join(", ")
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
            !FeatureGates::parse("")
                .unwrap()
                .enabled(Gate::ObjectLevelWorkloadIdentity)
        );
        assert!(
            FeatureGates::parse("ObjectLevelWorkloadIdentity=true")
                .unwrap()
                .enabled(Gate::ObjectLevelWorkloadIdentity)
        );
        assert!(
            !FeatureGates::parse(
                "ObjectLevelWorkloadIdentity=true,ObjectLevelWorkloadIdentity=false"
            )
            .unwrap()
            .enabled(Gate::ObjectLevelWorkloadIdentity)
        );
        assert!(
            FeatureGates::parse("Nope=true")
                .unwrap_err()
                .contains("unknown feature gate 'Nope'")
        );
        assert!(FeatureGates::parse("ObjectLevelWorkloadIdentity").is_err());
        assert!(FeatureGates::parse("ObjectLevelWorkloadIdentity=yes").is_err());
    }
}
