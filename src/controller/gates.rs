//! `--feature-gates` as Flux v1.10's controllers take it: every Flux gate name is known, each
//! either honoured, without effect here, or refused when set away from Flux's default.

/// A gate driftless acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// apply-controller: an unset `${var}` without a default fails the build instead of
    /// becoming empty (Flux: on by default since kustomize-controller v1.9).
    StrictPostBuildSubstitutions,
    /// apply-controller: no ConfigMap/Secret watches for `postBuild.substituteFrom`.
    DisableConfigWatchers,
    /// apply-controller: a new reconcile request interrupts a health check in progress.
    CancelHealthCheckOnNewRevision,
    /// apply-controller: a dependency's `readyExpr` is checked besides the built-in readiness
    /// rule instead of replacing it.
    AdditiveCELDependencyCheck,
}

/// What driftless does with a Flux gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Support {
    /// Honoured: the value changes behaviour as it does in Flux.
    Honoured(Gate),
    /// Either value behaves as Flux does (the gate tunes Flux internals driftless does not have).
    NoEffect(&'static str),
    /// Only Flux's default is available; the other value is refused at start-up.
    DefaultOnly(&'static str),
}

/// One of Flux's gates: its name, Flux's default, and what driftless does with it.
struct Known {
    name: &'static str,
    default: bool,
    support: Support,
}

const fn known(name: &'static str, default: bool, support: Support) -> Known {
    Known {
        name,
        default,
        support,
    }
}

const CACHE: Support = Support::NoEffect(
    "driftless reads Secrets and ConfigMaps from the API server when it needs them either way",
);

/// source-controller v1.10.1's gates.
const SOURCE_GATES: &[Known] = &[known("CacheSecretsAndConfigMaps", false, CACHE)];

/// kustomize-controller v1.10.1's gates.
const APPLY_GATES: &[Known] = &[
    known("CacheSecretsAndConfigMaps", false, CACHE),
    known(
        "StrictPostBuildSubstitutions",
        true,
        Support::Honoured(Gate::StrictPostBuildSubstitutions),
    ),
    known(
        "DisableStatusPollerCache",
        true,
        Support::NoEffect("driftless's health checks read each object from the API server"),
    ),
    known(
        "DirectSourceFetch",
        false,
        Support::NoEffect("driftless reads source objects from the API server before fetching"),
    ),
    known(
        "DisableCommitStatusEvent",
        false,
        Support::NoEffect("driftless sends no commit-status event (its sources are not Git)"),
    ),
    known(
        "DisableFailFastBehavior",
        false,
        Support::DefaultOnly("health checks keep failing fast on a failed workload"),
    ),
    known(
        "GroupChangeLog",
        false,
        Support::DefaultOnly("events list each changed object"),
    ),
    known(
        "AdditiveCELDependencyCheck",
        false,
        Support::Honoured(Gate::AdditiveCELDependencyCheck),
    ),
    known(
        "ExternalArtifact",
        false,
        Support::DefaultOnly("ExternalArtifact sources are not supported by driftless yet"),
    ),
    known(
        "CancelHealthCheckOnNewRevision",
        false,
        Support::Honoured(Gate::CancelHealthCheckOnNewRevision),
    ),
    known(
        "DisableConfigWatchers",
        false,
        Support::Honoured(Gate::DisableConfigWatchers),
    ),
    known(
        "MigrateAPIVersion",
        false,
        Support::DefaultOnly("managed objects' API versions are not migrated by driftless"),
    ),
];

/// Gates Flux v1.10 retired: accepted with any value and without effect, as Flux does.
const RETIRED: &[(&str, &str)] = &[(
    "ObjectLevelWorkloadIdentity",
    "object-level workload identity is always enabled",
)];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeatureGates {
    enabled: Vec<Gate>,
    /// Notes for the start-up log: retired gates and gates without effect that were set.
    pub notes: Vec<String>,
}

impl FeatureGates {
    /// Every `--feature-gates` of the source-controller, in order (later keys win).
    pub fn parse_source(occurrences: &[String]) -> Result<FeatureGates, String> {
        Self::parse(SOURCE_GATES, occurrences)
    }

    /// Every `--feature-gates` of the apply-controller, in order (later keys win).
    pub fn parse_apply(occurrences: &[String]) -> Result<FeatureGates, String> {
        Self::parse(APPLY_GATES, occurrences)
    }

    fn parse(known: &[Known], occurrences: &[String]) -> Result<FeatureGates, String> {
        let mut set: Vec<(String, bool)> = Vec::new();
        for (name, value) in occurrences.iter().flat_map(|o| pairs(o)) {
            let (name, value) = (name?, value);
            set.retain(|(n, _)| *n != name);
            set.push((name, value));
        }
        let mut gates = FeatureGates::default();
        for k in known {
            let value = set
                .iter()
                .find(|(n, _)| n == k.name)
                .map_or(k.default, |(_, v)| *v);
            match k.support {
                Support::Honoured(gate) if value => gates.enabled.push(gate),
                Support::Honoured(_) => {}
                Support::NoEffect(why) if value != k.default => gates.notes.push(format!(
                    "feature gate {}={value} has no effect: {why}",
                    k.name
                )),
                Support::DefaultOnly(why) if value != k.default => {
                    return Err(format!(
                        "feature gate {}={value} is not supported: {why}",
                        k.name
                    ));
                }
                Support::NoEffect(_) | Support::DefaultOnly(_) => {}
            }
        }
        for (name, value) in &set {
            if known.iter().any(|k| k.name == name) {
                continue;
            }
            match RETIRED.iter().find(|(n, _)| n == name) {
                Some((_, why)) => gates
                    .notes
                    .push(format!("feature gate {name}={value} is retired: {why}")),
                None => {
                    let names: Vec<&str> = known.iter().map(|k| k.name).collect();
                    return Err(format!(
                        "unknown feature gate '{name}' (this controller knows: {})",
                        names.join(", ")
                    ));
                }
            }
        }
        Ok(gates)
    }

    pub fn enabled(&self, gate: Gate) -> bool {
        self.enabled.contains(&gate)
    }
}

/// `A=true, B=false,` as Kubernetes' `MapStringBool` reads it: empty items skipped, key and
/// value trimmed, the value a Go boolean.
fn pairs(text: &str) -> impl Iterator<Item = (Result<String, String>, bool)> + '_ {
    text.split(',')
        .filter(|item| !item.trim().is_empty())
        .map(|item| match item.split_once('=') {
            None => (
                Err(format!(
                    "malformed feature gate '{}': expected Name=true or Name=false",
                    crate::util::truncate(item, 64)
                )),
                false,
            ),
            Some((name, value)) => match super::flags::go_bool(value.trim()) {
                Ok(on) => (Ok(name.trim().to_string()), on),
                Err(e) => (Err(format!("feature gate '{}': {e}", name.trim())), false),
            },
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(items: &[&str]) -> Result<FeatureGates, String> {
        FeatureGates::parse_apply(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn source(items: &[&str]) -> Result<FeatureGates, String> {
        FeatureGates::parse_source(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn strict_substitution_is_on_unless_turned_off() {
        let strict = Gate::StrictPostBuildSubstitutions;
        assert!(apply(&[]).unwrap().enabled(strict));
        assert!(
            !apply(&["StrictPostBuildSubstitutions=false"])
                .unwrap()
                .enabled(strict)
        );
        assert!(
            !apply(&["StrictPostBuildSubstitutions=F"])
                .unwrap()
                .enabled(strict)
        );
        // Later occurrences and later keys win, as Flux's map flag merges them.
        assert!(
            apply(&[
                "StrictPostBuildSubstitutions=false",
                "StrictPostBuildSubstitutions=true"
            ])
            .unwrap()
            .enabled(strict)
        );
        assert!(
            !apply(&["StrictPostBuildSubstitutions=true,,StrictPostBuildSubstitutions=0,"])
                .unwrap()
                .enabled(strict)
        );
    }

    #[test]
    fn retired_gates_are_accepted_with_a_note() {
        for gates in [
            source(&["ObjectLevelWorkloadIdentity=true"]).unwrap(),
            apply(&["ObjectLevelWorkloadIdentity=false"]).unwrap(),
        ] {
            assert_eq!(gates.notes.len(), 1);
            assert!(gates.notes[0].contains("retired"), "{:?}", gates.notes);
        }
    }

    #[test]
    fn flux_defaults_are_accepted_and_other_values_refused_by_name() {
        let defaults = apply(&[
            "DisableFailFastBehavior=false,ExternalArtifact=false,DisableStatusPollerCache=true",
        ])
        .unwrap();
        assert!(defaults.notes.is_empty());
        let refused = apply(&["ExternalArtifact=true"]).unwrap_err();
        assert!(
            refused.contains("ExternalArtifact=true is not supported"),
            "{refused}"
        );
        let noted = apply(&["CacheSecretsAndConfigMaps=true"]).unwrap();
        assert!(
            noted.notes[0].contains("has no effect"),
            "{:?}",
            noted.notes
        );
    }

    #[test]
    fn unknown_and_malformed_gates_are_refused() {
        assert!(
            source(&["Nope=true"])
                .unwrap_err()
                .contains("unknown feature gate 'Nope'")
        );
        // Each controller knows only its own Flux counterpart's gates.
        assert!(
            source(&["StrictPostBuildSubstitutions=true"])
                .unwrap_err()
                .contains("this controller knows: CacheSecretsAndConfigMaps")
        );
        assert!(
            source(&["CacheSecretsAndConfigMaps"])
                .unwrap_err()
                .contains("malformed")
        );
        assert!(source(&["CacheSecretsAndConfigMaps=yes"]).is_err());
    }
}
