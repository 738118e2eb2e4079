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
        Format::Ini => ini(text),
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

/// INI as SOPS reads it (gopkg.in/ini.v1): sections of `key = value` (or `key: value`), the
/// keys before any header in `DEFAULT`, `;` and `#` comment lines (not data: comments are never
/// hashed into the MAC), values trimmed and unquoted (`"…"`, `` `…` ``, `"""…"""` over several
/// lines), an unquoted value cut at its first `;` or `#`. The `[sops]` section holds the
/// metadata, flattened as in dotenv, with `\n` for newlines.
fn ini(text: &str) -> Result<(Vec<Ordered>, Metadata), String> {
    let mut sections: Vec<(String, Vec<(String, Ordered)>)> = vec![("DEFAULT".into(), Vec::new())];
    let mut flat = None;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            let name = header
                .strip_suffix(']')
                .ok_or("unclosed section header")?
                .trim()
                .to_string();
            if name == "sops" {
                flat = Some(Vec::new());
            } else {
                flat = None;
                sections.push((name, Vec::new()));
            }
            continue;
        }
        let at = line
            .find(['=', ':'])
            .ok_or("a line that is neither a section, a comment nor key = value")?;
        let key = line[..at].trim().to_string();
        let value = ini_value(line[at + 1..].trim(), &mut lines)?;
        if let Some(flat) = &mut flat {
            flat.push((key, value.replace("\\n", "\n")));
        } else if let Some((_, entries)) = sections.last_mut() {
            entries.push((key, Ordered::Str(value)));
        }
    }
    let metadata = Metadata::parse(&unflatten(flat.ok_or("sops metadata not found")?)?)?;
    let tree = sections
        .into_iter()
        .map(|(name, entries)| (name, Ordered::Map(entries)))
        .collect();
    Ok((vec![Ordered::Map(tree)], metadata))
}

/// One INI value, unquoted as ini.v1 does; a `"""` value may go on over the next lines.
fn ini_value<'a>(raw: &str, lines: &mut impl Iterator<Item = &'a str>) -> Result<String, String> {
    if let Some(rest) = raw.strip_prefix("\"\"\"") {
        if let Some(end) = rest.find("\"\"\"") {
            return Ok(rest[..end].to_string());
        }
        let mut value = rest.to_string();
        for line in lines.by_ref() {
            value.push('\n');
            if let Some(end) = line.find("\"\"\"") {
                value.push_str(&line[..end]);
                return Ok(value);
            }
            value.push_str(line);
        }
        return Err("an unclosed \"\"\" value".into());
    }
    for quote in ['"', '`'] {
        if raw.len() >= 2 && raw.starts_with(quote) && raw.ends_with(quote) {
            return Ok(raw[1..raw.len() - 1].to_string());
        }
    }
    let cut = raw.find([';', '#']).unwrap_or(raw.len());
    Ok(raw[..cut].trim_end().to_string())
}

/// INI as SOPS writes it (ini.v1, pretty): `=` aligned per section, a blank line between
/// sections, `DEFAULT`'s keys without a header, values quoted where ini.v1 would need it.
fn ini_text(docs: &[Ordered]) -> Result<Vec<u8>, String> {
    let Some(Ordered::Map(sections)) = docs.first() else {
        return Err("the file is not a mapping of sections".into());
    };
    let mut blocks = Vec::new();
    for (name, section) in sections {
        let Ordered::Map(entries) = section else {
            return Err(
                "Error encoding section: Section values should always be TreeBranches".into(),
            );
        };
        if name == "DEFAULT" && entries.is_empty() {
            continue;
        }
        let width = entries
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        let mut block = String::new();
        if name != "DEFAULT" {
            block.push_str(&format!("[{name}]\n"));
        }
        for (key, value) in entries {
            let text = match value {
                Ordered::Str(s) => s.clone(),
                Ordered::Seq(_) | Ordered::Map(_) => {
                    return Err(format!(
                        "cannot use complex value in INI file; offending key {key}"
                    ));
                }
                other => serde_json::to_string(other).map_err(|e| e.to_string())?,
            };
            let pad = width - key.chars().count();
            block.push_str(&format!(
                "{key}{} = {}\n",
                " ".repeat(pad),
                ini_quoted(&text)
            ));
        }
        blocks.push(block);
    }
    Ok(blocks.join("\n").into_bytes())
}

fn ini_quoted(value: &str) -> String {
    if value.contains('\n') || value.contains('`') {
        format!("\"\"\"{value}\"\"\"")
    } else if value.contains(['#', ';']) {
        format!("`{value}`")
    } else if value.starts_with(' ') || value.ends_with(' ') {
        format!("\"{value}\"")
    } else {
        value.to_string()
    }
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
        Output::As(Format::Ini) => ini_text(&docs).map_err(|e| failed("INI", e)),
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
        assert_eq!(Format::for_path("app.ini"), Format::Ini);
        assert_eq!(
            Format::detect(b"x: 1\nsops:\n    mac: ENC[AES"),
            Some(Format::Yaml)
        );
        assert_eq!(Format::detect(b"plain"), None);
    }

    #[test]
    fn ini_values_read_and_write_as_ini_v1_does() {
        let text = "top = 1\n; a comment\n[db]\nhost = example ; trailing\nquoted = \"a;b\"\n\
                    tick = `x#y`\nlong = \"\"\"line1\nline2\"\"\"\ncolon: v\n\n[sops]\n\
                    lastmodified = 2024-01-01T00:00:00Z\nage__list_0__map_enc = a\\nb\n\
                    age__list_0__map_recipient = r\n";
        let (docs, metadata) = ini(text).unwrap();
        let Some(Ordered::Map(sections)) = docs.first() else {
            panic!("{docs:?}")
        };
        assert_eq!(sections[0].0, "DEFAULT");
        let db = &sections[1].1;
        assert_eq!(db.get("host"), Some(&Ordered::Str("example".into())));
        assert_eq!(db.get("quoted"), Some(&Ordered::Str("a;b".into())));
        assert_eq!(db.get("tick"), Some(&Ordered::Str("x#y".into())));
        assert_eq!(db.get("long"), Some(&Ordered::Str("line1\nline2".into())));
        assert_eq!(db.get("colon"), Some(&Ordered::Str("v".into())));
        assert!(matches!(
            &metadata.groups[0][0],
            super::super::metadata::MasterKey::Age { enc, .. } if enc == "a\nb"
        ));
        let written = String::from_utf8(ini_text(&docs).unwrap()).unwrap();
        assert_eq!(
            written,
            "top = 1\n\n[db]\nhost   = example\nquoted = `a;b`\ntick   = `x#y`\nlong   = \"\"\"line1\nline2\"\"\"\ncolon  = v\n"
        );
        assert!(ini("[open\n").is_err());
        assert!(ini("[a]\nkey\n").is_err());
        assert_eq!(ini("[a]\nk = v\n").unwrap_err(), "sops metadata not found");
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
