//! Where a key path (`databases[2].tls.ca_cert_file`) or a role document
//! sits in a YAML text. serde gives values without positions, so the text is
//! read a second time with a parser that keeps them (saphyr's marked nodes).

use saphyr::{LoadableYamlNode, MarkedYaml};

/// A place in a text: line and column, both counted from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
}

impl Position {
    /// The start of the text, where problems of the whole file are shown.
    pub const START: Position = Position { line: 1, column: 1 };

    fn of(node: &MarkedYaml<'_>) -> Position {
        let start = node.span.start;
        Position {
            line: start.line(),
            column: start.col() + 1,
        }
    }
}

/// The documents of one YAML text, with positions.
pub struct Located<'a> {
    documents: Vec<MarkedYaml<'a>>,
}

impl<'a> Located<'a> {
    /// Reads `text`; a text YAML cannot read has no positions to give
    /// (serde reports its syntax error with its own position).
    pub fn new(text: &'a str) -> Located<'a> {
        Located {
            documents: MarkedYaml::load_from_str(text).unwrap_or_default(),
        }
    }

    /// The key path's position in the first document: the key of the last
    /// mapping entry or the sequence item it names. When the text lacks the
    /// rest of the path (a default value), the deepest part it has.
    pub fn key(&self, path: &str) -> Position {
        let Some(mut node) = self.documents.first() else {
            return Position::START;
        };
        let mut found = Position::START;
        for segment in segments(path) {
            let next = match segment {
                Segment::Key(key) => node.data.as_mapping().and_then(|entries| {
                    entries
                        .iter()
                        .find(|(k, _)| k.data.as_str() == Some(key))
                        .map(|(k, v)| (Position::of(k), v))
                }),
                Segment::Index(index) => node
                    .data
                    .as_sequence()
                    .and_then(|items| items.get(index))
                    .map(|item| (Position::of(item), item)),
            };
            let Some((position, value)) = next else {
                break;
            };
            found = position;
            node = value;
        }
        found
    }

    /// Where the document at `index` (from 1, as [`crate::rbac::RbacError`]
    /// counts) begins.
    pub fn document(&self, index: usize) -> Position {
        index
            .checked_sub(1)
            .and_then(|i| self.documents.get(i))
            .map_or(Position::START, Position::of)
    }

    /// The `metadata: name:` value of the last document whose name is `name`
    /// (the last, so a name defined twice points at its repetition).
    pub fn named_document(&self, name: &str) -> Position {
        self.documents
            .iter()
            .rev()
            .find_map(|document| {
                let value = document
                    .data
                    .as_mapping_get("metadata")?
                    .data
                    .as_mapping_get("name")?;
                (value.data.as_str() == Some(name)).then(|| Position::of(value))
            })
            .unwrap_or(Position::START)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Segment<'p> {
    Key(&'p str),
    Index(usize),
}

/// `a.b[2].c` as `a`, `b`, `2`, `c`.
fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, indexes) = part.split_once('[').unwrap_or((part, ""));
        if !key.is_empty() {
            out.push(Segment::Key(key));
        }
        out.extend(
            indexes
                .split('[')
                .filter_map(|i| i.trim_end_matches(']').parse().ok())
                .map(Segment::Index),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: usize, column: usize) -> Position {
        Position { line, column }
    }

    const CONFIG: &str = "\
data_dir: state
databases:
  - name: app
    uri: localhost:5432
    tls:
      mode: verify-ca
      ca_cert_file: ca.pem
  - { name: second, uri: 'h:1', tls: { ca_cert_file: b.pem } }
store:
  postgres:
    url: postgres://u@h/db
";

    #[test]
    fn key_paths_point_at_their_key() {
        let located = Located::new(CONFIG);
        assert_eq!(located.key("data_dir"), at(1, 1));
        assert_eq!(located.key("databases"), at(2, 1));
        assert_eq!(located.key("databases[0]"), at(3, 5));
        assert_eq!(located.key("databases[0].tls.ca_cert_file"), at(7, 7));
        assert_eq!(located.key("databases[1].tls.ca_cert_file"), at(8, 40));
        assert_eq!(located.key("store.postgres.url"), at(11, 5));
    }

    #[test]
    fn missing_keys_point_at_the_deepest_part_present() {
        let located = Located::new(CONFIG);
        // A default: `pool_size` is not written.
        assert_eq!(located.key("store.postgres.pool_size"), at(10, 3));
        assert_eq!(located.key("databases[7].name"), at(2, 1));
        assert_eq!(located.key("public_url"), Position::START);
        assert_eq!(Located::new("a: [").key("a"), Position::START);
    }

    #[test]
    fn role_documents_are_found_by_index_and_name() {
        let text = "kind: role\nmetadata: { name: a }\n---\nkind: role\nmetadata:\n  name: b\n---\nmetadata: { name: a }\n";
        let located = Located::new(text);
        assert_eq!(located.document(1), at(1, 1));
        assert_eq!(located.document(2), at(4, 1));
        assert_eq!(located.named_document("b"), at(6, 9));
        assert_eq!(located.named_document("a"), at(8, 19));
        assert_eq!(located.named_document("c"), Position::START);
    }

    #[test]
    fn paths_split_into_keys_and_indexes() {
        assert_eq!(
            segments("connectors[1].claims_to_roles[0].roles[2]"),
            [
                Segment::Key("connectors"),
                Segment::Index(1),
                Segment::Key("claims_to_roles"),
                Segment::Index(0),
                Segment::Key("roles"),
                Segment::Index(2),
            ]
        );
    }
}
