//! Command-line values read as Flux's controllers read them (pflag over Go's `strconv` and
//! `time`), and the Flux flags driftless refuses, each with the reason.
//!
//! Charts and users pass Flux's flags verbatim, so a value Flux accepts must mean the same here:
//! `--enable-leader-election=false`, `--no-cross-namespace-refs=True`, `--concurrent=0x10`. Where
//! pflag is lax in a way that hides mistakes, driftless is stricter and says why: `--x false`
//! (pflag sets x to true and silently drops `false`) is an error here.

use std::ffi::OsString;

/// Go's `strconv.ParseBool`: the twelve spellings pflag accepts for a boolean flag.
pub fn go_bool(text: &str) -> Result<bool, String> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        other => Err(format!(
            "'{}' is not a boolean (use true or false)",
            crate::util::truncate(other, 32)
        )),
    }
}

/// Go's `strconv.ParseUint(text, 0, 64)`, then narrowed to `T`: decimal, `0x`/`0o`/`0b`
/// prefixes, a leading `0` for octal, and `_` between digits.
pub fn go_uint<T: TryFrom<u64>>(text: &str) -> Result<T, String> {
    let shown = || crate::util::truncate(text, 32);
    let value = parse_go_uint(text).ok_or_else(|| format!("'{}' is not a number", shown()))?;
    T::try_from(value).map_err(|_| format!("{} is out of range", shown()))
}

fn parse_go_uint(text: &str) -> Option<u64> {
    let text = text.strip_prefix('+').unwrap_or(text);
    let (radix, digits, prefixed) = match text.as_bytes() {
        [b'0', b'x' | b'X', ..] => (16, &text[2..], true),
        [b'0', b'o' | b'O', ..] => (8, &text[2..], true),
        [b'0', b'b' | b'B', ..] => (2, &text[2..], true),
        [b'0', _, ..] => (8, &text[1..], true),
        _ => (10, text, false),
    };
    if !underscores_ok(digits, prefixed) {
        return None;
    }
    let digits: String = digits.chars().filter(|c| *c != '_').collect();
    if digits.is_empty() {
        return None;
    }
    u64::from_str_radix(&digits, radix).ok()
}

/// Go allows `_` only between digits, or right after a base prefix.
fn underscores_ok(digits: &str, prefixed: bool) -> bool {
    let bytes = digits.as_bytes();
    let mut previous_was_digit = prefixed;
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'_' {
            let next_is_digit = bytes.get(i + 1).is_some_and(|n| *n != b'_');
            if !previous_was_digit || !next_is_digit {
                return false;
            }
            previous_was_digit = false;
        } else {
            previous_was_digit = true;
        }
    }
    true
}

/// Flux environment defaults apply only when the variable is set and non-empty (Flux's
/// `envOrDefault`); clap would take an empty value as given, so those are dropped first.
pub fn drop_empty_env(names: &[&str]) {
    for name in names {
        if std::env::var_os(name).is_some_and(|v| v.is_empty()) {
            // SAFETY: called from `main` before the runtime or any other thread starts.
            unsafe { std::env::remove_var(name) };
        }
    }
}

/// A Flux flag driftless does not take, and why.
pub struct Refused {
    pub flag: &'static str,
    pub reason: &'static str,
}

const HELM_KINDS: &str = "driftless reconciles OCIRepository and Bucket only; keep Flux's \
     source-controller for HelmRepository and HelmChart (see README, side-by-side adoption)";
const GIT_KINDS: &str = "driftless reconciles OCIRepository and Bucket only; keep Flux's \
     source-controller for GitRepository (see README, side-by-side adoption)";
const SPIFFE_BROKER: &str = "the SPIFFE Broker (object-level workload identity through SPIFFE) \
     is not supported by driftless; SPIFFE mTLS between the controllers is (see README)";

/// Flags both Flux controllers have and both driftless controllers refuse.
pub const SHARED_REFUSED: &[Refused] = &[
    Refused {
        flag: "spiffe-broker-endpoint",
        reason: SPIFFE_BROKER,
    },
    Refused {
        flag: "spiffe-broker-id",
        reason: SPIFFE_BROKER,
    },
];

/// Flux source-controller v1.10.1 flags that `driftless source-controller` refuses (besides
/// [`SHARED_REFUSED`]).
pub const SOURCE_REFUSED: &[Refused] = &[
    Refused {
        flag: "requeue-dependency",
        reason: HELM_KINDS,
    },
    Refused {
        flag: "helm-index-max-size",
        reason: HELM_KINDS,
    },
    Refused {
        flag: "helm-chart-max-size",
        reason: HELM_KINDS,
    },
    Refused {
        flag: "helm-chart-file-max-size",
        reason: HELM_KINDS,
    },
    Refused {
        flag: "helm-cache-max-size",
        reason: HELM_KINDS,
    },
    Refused {
        flag: "helm-cache-ttl",
        reason: HELM_KINDS,
    },
    Refused {
        flag: "helm-cache-purge-interval",
        reason: HELM_KINDS,
    },
    Refused {
        flag: "ssh-kex-algos",
        reason: GIT_KINDS,
    },
    Refused {
        flag: "ssh-hostkey-algos",
        reason: GIT_KINDS,
    },
];

/// Flux kustomize-controller v1.10.1 flags that `driftless apply-controller` refuses (besides
/// [`SHARED_REFUSED`]).
pub const APPLY_REFUSED: &[Refused] = &[];

/// The refusal for the first Flux flag in `args` that the controller `subcommand` refuses.
pub fn refused_flag(args: &[OsString]) -> Option<String> {
    let words: Vec<&str> = args.iter().filter_map(|a| a.to_str()).collect();
    let (controller, table) = if words.contains(&"source-controller") {
        ("source-controller", SOURCE_REFUSED)
    } else if words.contains(&"apply-controller") {
        ("apply-controller", APPLY_REFUSED)
    } else {
        return None;
    };
    words
        .iter()
        .take_while(|w| **w != "--")
        .filter_map(|w| w.strip_prefix("--"))
        .map(|w| w.split_once('=').map_or(w, |(name, _)| name))
        .find_map(|name| table.iter().chain(SHARED_REFUSED).find(|r| r.flag == name))
        .map(|r| {
            format!(
                "driftless {controller}: flag --{} is not supported: {}",
                r.flag, r.reason
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_take_go_spellings_only() {
        for yes in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(go_bool(yes), Ok(true), "{yes}");
        }
        for no in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(go_bool(no), Ok(false), "{no}");
        }
        for bad in ["", "yes", "on", "tRUE", " true", "2"] {
            assert!(go_bool(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn integers_follow_go_base_prefixes() {
        let cases: &[(&str, Option<u64>)] = &[
            ("10", Some(10)),
            ("+10", Some(10)),
            ("0x1f", Some(31)),
            ("0X1F", Some(31)),
            ("0o17", Some(15)),
            ("017", Some(15)),
            ("0b101", Some(5)),
            ("0", Some(0)),
            ("1_000", Some(1000)),
            ("0x_1f", Some(31)),
            ("_1", None),
            ("1_", None),
            ("1__0", None),
            ("08", None),
            ("0x", None),
            ("-1", None),
            ("", None),
            ("1e3", None),
            ("18446744073709551616", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_go_uint(text), *want, "{text:?}");
        }
        assert_eq!(go_uint::<u8>("255"), Ok(255));
        assert!(go_uint::<u8>("256").unwrap_err().contains("out of range"));
    }

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn refused_flags_name_the_flag_and_the_reason() {
        let message = refused_flag(&args(&[
            "driftless",
            "source-controller",
            "--helm-cache-ttl=5m",
        ]))
        .unwrap();
        assert!(message.contains("--helm-cache-ttl"), "{message}");
        assert!(message.contains("HelmRepository"), "{message}");
        let message = refused_flag(&args(&[
            "driftless",
            "apply-controller",
            "--spiffe-broker-endpoint",
            "dns:///spire-server:8443",
        ]))
        .unwrap();
        assert!(
            message.contains("--spiffe-broker-endpoint is not supported"),
            "{message}"
        );
        assert!(
            refused_flag(&args(&[
                "driftless",
                "apply-controller",
                "--authorized-artifact-server-spiffe-id=spiffe://a/b"
            ]))
            .is_none()
        );
        assert!(
            refused_flag(&args(&[
                "driftless",
                "apply-controller",
                "--sops-vault-configmap=vault"
            ]))
            .is_none()
        );
        assert!(
            refused_flag(&args(&[
                "driftless",
                "apply-controller",
                "--sops-age-secret=x"
            ]))
            .is_none()
        );
        // Each controller refuses only its own table.
        assert!(
            refused_flag(&args(&[
                "driftless",
                "apply-controller",
                "--helm-cache-ttl=1m"
            ]))
            .is_none()
        );
        assert!(
            refused_flag(&args(&["driftless", "source-controller", "--concurrent=2"])).is_none()
        );
        assert!(
            refused_flag(&args(&[
                "driftless",
                "artifact",
                "push",
                "--sops-age-secret"
            ]))
            .is_none()
        );
    }
}
