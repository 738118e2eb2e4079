//! SOPS's file formats (its stores): how each holds its values and its `sops` section, and
//! how a decrypted file is written back.

use std::collections::BTreeMap;

use super::keys::Keyring;
use super::metadata::Metadata;
use super::tree;
use crate::apply::yaml::{self, Ordered};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
    Dotenv,
    Ini,
    Binary,
}

impl Format {
    /// Flux's `formatForPath`: by extension, binary otherwise; a `.dockerconfigjson` key is
    /// JSON.
    pub fn for_path(name: &str) -> Format {
        if name.ends_with(".dockerconfigjson") {
            return Format::Json;
        }
        match name.rsplit_once('.').map(|(_, ext)| ext) {
            Some("yaml" | "yml") => Format::Yaml,
            Some("json") => Format::Json,
            Some("env") => Format::Dotenv,
            Some("ini") => Format::Ini,
            _ => Format::Binary,
        }
    }

    /// What only an encrypted file of this format contains (Flux's marker bytes).
    pub fn marker(self) -> &'static str {
        match self {
            Format::Yaml => "mac: ENC[",
            Format::Json | Format::Binary => "\"mac\": \"ENC[",
            Format::Dotenv => "sops_mac=ENC[",
            Format::Ini => "[sops]",
        }
    }

    pub fn is_encrypted(self, content: &[u8]) -> bool {
        let marker = self.marker().as_bytes();
        content.windows(marker.len()).any(|w| w == marker)
    }

    /// The format whose marker `content` carries, if any.
    pub fn detect(content: &[u8]) -> Option<Format> {
        [Format::Yaml, Format::Json, Format::Dotenv, Format::Ini]
            .into_iter()
            .find(|f| f.is_encrypted(content))
    }

    fn name(self) -> &'static str {
        match self {
            Format::Yaml => "YAML",
            Format::Json => "JSON",
            Format::Dotenv => "dotenv",
            Format::Ini => "INI",
            Format::Binary => "binary",
        }
    }
}

/// How the decrypted documents are written: as the file's format, or as JSON documents (for
/// manifests read back by kustomize and the controller: JSON is YAML whose scalars cannot be
/// read as another type than they were).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    As(Format),
    JsonDocuments,
}

/// Decrypts a SOPS file: its data key from `keys`, every value, the MAC checked.
pub fn decrypt(
    content: &[u8],
    input: Format,
    output: Output,
    keys: &Keyring,
) -> Result<Vec<u8>, String> {
    let (docs, metadata) = load(content, input)?;
    let data_key = keys.data_key(&metadata)?;
    let docs = tree::decrypt_documents(docs, &metadata, &data_key)?;
    emit(docs, output)
}

fn load(content: &[u8], format: Format) -> Result<(Vec<Ordered>, Metadata), String> {
    let text = std::str::from_utf8(content)
        .map_err(|_| format!("failed to load encrypted {} data: not UTF-8", format.name()))?;
    let loaded = match format {
        Format::Yaml | Format::Json | Format::Binary => structured(text),
        Format::Dotenv => dotenv(text),
        Format::Ini => Err("INI files are not decrypted by driftless yet".into()),
    };
    loaded.map_err(|e| format!("failed to load encrypted {} data: {e}", format.name()))
}

/// YAML and JSON (JSON is YAML): the `sops` key of the documents holds the metadata.
fn structured(text: &str) -> Result<(Vec<Ordered>, Metadata), String> {
    let docs = yaml::ordered_documents(text).map_err(|e| e.to_string())?;
    let mut metadata = None;
    let mut out = Vec::with_capacity(docs.len());
    for doc in docs {
        let Ordered::Map(entries) = doc else {
            out.push(doc);
            continue;
        };
        let (sops, rest): (Vec<_>, Vec<_>) = entries.into_iter().partition(|(k, _)| k == "sops");
        if metadata.is_none()
            && let Some((_, section)) = sops.into_iter().next()
        {
            metadata = Some(Metadata::parse(&section)?);
        }
        out.push(Ordered::Map(rest));
    }
    let metadata = metadata.ok_or("sops metadata not found")?;
    Ok((out, metadata))
}

/// `KEY=value` lines (`\n` escaped), `#` comments; the metadata is the `sops_` keys,
/// flattened.
fn dotenv(text: &str) -> Result<(Vec<Ordered>, Metadata), String> {
    let mut values = Vec::new();
    let mut flat = Vec::new();
    for line in text
        .split('\n')
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (key, value) = line
            .split_once('=')
            .ok_or("invalid dotenv input line: a line without '='")?;
        let value = value.replace("\\n", "\n");
        match key.strip_prefix("sops_") {
            Some(flat_key) => flat.push((flat_key.to_string(), value)),
            None => values.push((key.to_string(), Ordered::Str(value))),
        }
    }
    let metadata = Metadata::parse(&unflatten(flat)?)?;
    Ok((vec![Ordered::Map(values)], metadata))
}

/// SOPS's flattened metadata (`age__list_0__map_enc`) back into a tree.
fn unflatten(pairs: Vec<(String, String)>) -> Result<Ordered, String> {
    #[derive(Default)]
    struct Node {
        value: Option<String>,
        keys: BTreeMap<String, Node>,
        items: BTreeMap<usize, Node>,
    }
    fn into_ordered(node: Node) -> Result<Ordered, String> {
        match (node.value, node.keys.is_empty(), node.items.is_empty()) {
            (Some(v), true, true) => Ok(Ordered::Str(v)),
            (None, false, true) => Ok(Ordered::Map(
                node.keys
                    .into_iter()
                    .map(|(k, n)| Ok((k, into_ordered(n)?)))
                    .collect::<Result<_, String>>()?,
            )),
            (None, true, false) => Ok(Ordered::Seq(
                node.items
                    .into_values()
                    .map(into_ordered)
                    .collect::<Result<_, _>>()?,
            )),
            (None, true, true) => Ok(Ordered::Map(Vec::new())),
            _ => Err("Type mismatch in the sops metadata".into()),
        }
    }
    let mut root = Node::default();
    for (path, value) in pairs {
        let mut node = &mut root;
        for token in tokenize(&path)? {
            node = match token {
                Token::Key(k) => node.keys.entry(k).or_default(),
                Token::Index(i) => node.items.entry(i).or_default(),
            };
        }
        if node.value.replace(value).is_some() {
            return Err("Duplicate value in the sops metadata".into());
        }
    }
    into_ordered(root)
}

enum Token {
    Key(String),
    Index(usize),
}

/// SOPS's metadata nests a few levels (`key_groups__list_0__map_age__list_0__map_enc`): a
/// longer path is refused before it is followed.
const MAX_METADATA_TOKENS: usize = 8;

fn tokenize(path: &str) -> Result<Vec<Token>, String> {
    const MAP: &str = "__map_";
    const LIST: &str = "__list_";
    if path.matches("__").count() >= MAX_METADATA_TOKENS * 2 {
        return Err("a sops metadata key nests too deep".into());
    }
    let mut tokens = Vec::new();
    let mut rest = path;
    let mut kind = None::<&str>;
    loop {
        let next = [MAP, LIST]
            .iter()
            .filter_map(|sep| rest.find(sep).map(|at| (at, *sep)))
            .min_by_key(|(at, _)| *at);
        let (part, after) = match next {
            Some((at, sep)) => (&rest[..at], Some((sep, &rest[at + sep.len()..]))),
            None => (rest, None),
        };
        tokens.push(match kind {
            Some(LIST) => Token::Index(
                part.parse()
                    .ok()
                    .filter(|i| *i < 10_000)
                    .ok_or("a list index in the sops metadata is not a small number")?,
            ),
            _ => Token::Key(part.to_string()),
        });
        if tokens.len() > MAX_METADATA_TOKENS {
            return Err("a sops metadata key nests too deep".into());
        }
        match after {
            Some((sep, tail)) => {
                kind = Some(sep);
                rest = tail;
            }
            None => return Ok(tokens),
        }
    }
}

fn emit(docs: Vec<Ordered>, output: Output) -> Result<Vec<u8>, String> {
    let failed =
        |format: &str, e: String| format!("failed to emit the decrypted file as {format}: {e}");
    match output {
        Output::JsonDocuments => {
            let mut out = String::new();
            for doc in &docs {
                out.push_str("---\n");
                out.push_str(
                    &serde_json::to_string(doc).map_err(|e| failed("JSON", e.to_string()))?,
                );
                out.push('\n');
            }
            Ok(out.into_bytes())
        }
        Output::As(Format::Yaml) => {
            let mut out = String::new();
            for (i, doc) in docs.iter().enumerate() {
                if i > 0 {
                    out.push_str("---\n");
                }
                out.push_str(
                    &serde_saphyr::to_string(doc).map_err(|e| failed("YAML", e.to_string()))?,
                );
            }
            Ok(out.into_bytes())
        }
        Output::As(Format::Json) => match docs.as_slice() {
            [doc] => serde_json::to_vec_pretty(doc).map_err(|e| failed("JSON", e.to_string())),
            _ => Err(failed("JSON", "more than one document".into())),
        },
        Output::As(Format::Binary) => match docs.first().and_then(|d| d.get("data")) {
            Some(Ordered::Str(data)) => Ok(data.clone().into_bytes()),
            Some(_) => Err(failed(
                "binary",
                "'data' key in tree does not have a string value".into(),
            )),
            None => Err(failed("binary", "no binary data found in tree".into())),
        },
        Output::As(Format::Dotenv) => dotenv_text(&docs).map_err(|e| failed("dotenv", e)),
        Output::As(Format::Ini) => Err("INI files are not decrypted by driftless yet".into()),
    }
}

fn dotenv_text(docs: &[Ordered]) -> Result<Vec<u8>, String> {
    let Some(Ordered::Map(entries)) = docs.first() else {
        return Err("the file is not a mapping".into());
    };
    let mut out = String::new();
    for (key, value) in entries {
        let text = match value {
            Ordered::Str(s) => s.replace('\n', "\\n"),
            Ordered::Seq(_) | Ordered::Map(_) => {
                return Err(format!(
                    "cannot use complex value in dotenv file; offending key {key}"
                ));
            }
            other => serde_json::to_string(other).map_err(|e| e.to_string())?,
        };
        out.push_str(&format!("{key}={text}\n"));
    }
    Ok(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_follow_flux() {
        assert_eq!(Format::for_path("secret.yaml"), Format::Yaml);
        assert_eq!(Format::for_path(".dockerconfigjson"), Format::Json);
        assert_eq!(Format::for_path("app.env"), Format::Dotenv);
        assert_eq!(Format::for_path("key"), Format::Binary);
        assert_eq!(
            Format::detect(b"x: 1\nsops:\n    mac: ENC[AES"),
            Some(Format::Yaml)
        );
        assert_eq!(Format::detect(b"plain"), None);
    }

    #[test]
    fn flattened_metadata_unflattens() {
        let tree = unflatten(vec![
            ("age__list_0__map_recipient".into(), "r".into()),
            ("age__list_0__map_enc".into(), "e".into()),
            ("lastmodified".into(), "t".into()),
        ])
        .unwrap();
        assert_eq!(
            tree,
            Ordered::Map(vec![
                (
                    "age".into(),
                    Ordered::Seq(vec![Ordered::Map(vec![
                        ("enc".into(), Ordered::Str("e".into())),
                        ("recipient".into(), Ordered::Str("r".into())),
                    ])])
                ),
                ("lastmodified".into(), Ordered::Str("t".into())),
            ])
        );
        assert!(
            unflatten(vec![
                ("a".into(), "1".into()),
                ("a__map_b".into(), "2".into())
            ])
            .is_err()
        );
        assert!(unflatten(vec![("a__list_99999999999".into(), "1".into())]).is_err());
        let deep = format!("mac{}", "__map_a".repeat(100_000));
        assert!(unflatten(vec![(deep, "1".into())]).is_err());
    }
}
