//! The raw manifest: the parsed TOML tree with the source span of every key and value.
//!
//! Nothing here knows what a key means; [`super::validate`] turns the tree into a
//! [`super::Manifest`].

use std::ops::Range;

use toml::de::{DeTable, DeValue};

use super::{Diagnostic, ManifestError};

/// A TOML value with the byte range it came from.
#[derive(Debug, Clone)]
pub struct Node {
    /// Byte range of the value in the manifest text.
    pub span: Range<usize>,
    /// The value.
    pub value: Value,
}

/// A TOML value (integers as `i128` so that every TOML integer fits).
#[derive(Debug, Clone)]
pub enum Value {
    /// A string.
    Str(String),
    /// An integer.
    Int(i128),
    /// A float (kept as its text).
    Float(String),
    /// A boolean.
    Bool(bool),
    /// A date/time (kept as its text).
    Datetime(String),
    /// An array.
    Array(Vec<Node>),
    /// A table: keys in source order, each with the span of the key.
    Table(Vec<Entry>),
}

/// One key of a table.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The key (one component, not dotted).
    pub key: String,
    /// Byte range of the key.
    pub key_span: Range<usize>,
    /// The value.
    pub node: Node,
}

impl Value {
    /// The TOML type name, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Bool(_) => "boolean",
            Value::Datetime(_) => "datetime",
            Value::Array(_) => "array",
            Value::Table(_) => "table",
        }
    }
}

/// The rendered manifest text parsed into a spanned tree, before any meaning is attached.
#[derive(Debug, Clone)]
pub struct RawManifest {
    text: String,
    root: Vec<Entry>,
}

impl RawManifest {
    /// Parses manifest text (TOML 1.1, which also allows trailing commas and newlines in
    /// inline tables, unlike Gramine's TOML 1.0 parser). Syntax errors name the line.
    pub fn parse(text: &str) -> Result<RawManifest, ManifestError> {
        let table = DeTable::parse(text).map_err(|err| {
            let line = err.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            let message = format!("TOML syntax error: {}", err.message().trim_end());
            ManifestError::new(vec![Diagnostic { key: String::new(), line, message }])
        })?;
        let root = convert_table(table.into_inner());
        Ok(RawManifest { text: text.to_owned(), root })
    }

    /// The manifest text exactly as parsed.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The top-level table.
    pub fn root(&self) -> &[Entry] {
        &self.root
    }

    /// 1-based line number of a byte offset.
    pub fn line(&self, offset: usize) -> usize {
        line_of(&self.text, offset)
    }
}

/// 1-based line number of byte `offset` in `text`.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

fn convert_table(table: DeTable<'_>) -> Vec<Entry> {
    table
        .into_iter()
        .map(|(key, value)| {
            let key_span = key.span();
            Entry { key: key.into_inner().into_owned(), key_span, node: convert(value) }
        })
        .collect()
}

fn convert(value: toml::Spanned<DeValue<'_>>) -> Node {
    let span = value.span();
    let value = match value.into_inner() {
        DeValue::String(s) => Value::Str(s.into_owned()),
        DeValue::Integer(i) => {
            // The parser has already validated the digits; i128 holds every TOML integer.
            Value::Int(i128::from_str_radix(i.as_str(), i.radix()).unwrap_or(i128::MAX))
        }
        DeValue::Float(f) => Value::Float(f.as_str().to_owned()),
        DeValue::Boolean(b) => Value::Bool(b),
        DeValue::Datetime(d) => Value::Datetime(d.to_string()),
        DeValue::Array(items) => Value::Array(items.into_iter().map(convert).collect()),
        DeValue::Table(t) => Value::Table(convert_table(t)),
    };
    Node { span, value }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_keys_and_tables_are_the_same_tree() {
        let a = RawManifest::parse("sgx.debug = true\n").unwrap();
        let b = RawManifest::parse("[sgx]\ndebug = true\n").unwrap();
        for m in [a, b] {
            let Value::Table(sgx) = &m.root()[0].node.value else { panic!("sgx is not a table") };
            assert_eq!(sgx[0].key, "debug");
            assert!(matches!(sgx[0].node.value, Value::Bool(true)));
        }
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = RawManifest::parse("a = 1\nfs.root = { uri = \"file:x\" \n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}
