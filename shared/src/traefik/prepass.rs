//! What serde cannot see, checked on the YAML event stream before serde reads the text: one
//! document only, no anchors, aliases or tags (an alias bomb is refused before anything is
//! expanded), bounded nesting, and no empty element Traefik refuses (`http: {}`,
//! `services: null`, `loadBalancer: {}`, `healthCheck:`, `servers:`, ...). Nothing is built:
//! the pass keeps only the keys leading to the current node, for messages.

use yaml_rust2::Event;
use yaml_rust2::parser::Parser;
use yaml_rust2::scanner::TScalarStyle;

use super::DocumentError;
use crate::names::shorten;

/// Deepest nesting a document may have. The format needs 7 levels
/// (`http.services.<name>.loadBalancer.sticky.cookie.<field>`).
pub(super) const MAX_DEPTH: usize = 16;

/// What the pre-pass found.
#[derive(Debug)]
pub(super) struct Found {
    pub(super) root: Root,
    /// The first empty element Traefik refuses. Reported after serde has read the text, so
    /// that an earlier fault (an unknown field above it) is reported first.
    pub(super) empty: Option<DocumentError>,
}

/// What the pre-pass found at the root.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Root {
    /// No document, or a null one (comments only): no services.
    Empty,
    /// Something serde has to read.
    Node,
}

enum Frame {
    Sequence {
        index: usize,
    },
    Mapping {
        line: usize,
        entries: usize,
        /// The key whose value is being read, and its line; `None` while a key is awaited.
        key: Option<(String, usize)>,
    },
}

fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

/// Refuses at once what serde must never see (several documents, anchors, aliases, tags, deep
/// nesting, invalid YAML); notes the first empty element.
pub(super) fn check(text: &str) -> Result<Found, DocumentError> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut documents = 0usize;
    let mut root = Root::Empty;
    let mut first_empty: Option<DocumentError> = None;
    loop {
        let (event, mark) = parser.next_token().map_err(|error| DocumentError::Yaml {
            line: error.marker().line(),
            message: error.info().to_owned(),
        })?;
        let line = mark.line();
        match event {
            Event::StreamEnd => {
                return Ok(Found {
                    root,
                    empty: first_empty,
                });
            }
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => {}
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err(DocumentError::MultipleDocuments { line });
                }
            }
            Event::Alias(_) => {
                return Err(DocumentError::UnsupportedYaml {
                    line,
                    feature: "aliases",
                });
            }
            Event::Scalar(value, style, anchor, tag) => {
                refuse_anchor_and_tag(line, anchor, tag.is_some())?;
                let null = style == TScalarStyle::Plain && is_null(&value);
                if stack.is_empty() && !null {
                    root = Root::Node;
                }
                if let Err(empty) = scalar(&mut stack, value, null, line) {
                    first_empty.get_or_insert(empty);
                }
            }
            Event::SequenceStart(anchor, ref tag) | Event::MappingStart(anchor, ref tag) => {
                refuse_anchor_and_tag(line, anchor, tag.is_some())?;
                if stack.len() >= MAX_DEPTH {
                    return Err(DocumentError::TooDeep {
                        line,
                        max: MAX_DEPTH,
                    });
                }
                root = Root::Node;
                stack.push(match event {
                    Event::SequenceStart(..) => Frame::Sequence { index: 0 },
                    _ => Frame::Mapping {
                        line,
                        entries: 0,
                        key: None,
                    },
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(Frame::Mapping {
                    line, entries: 0, ..
                }) = stack.pop()
                {
                    // An empty root mapping holds no services; `cookie: {}` asks Traefik for a
                    // default cookie. Every other empty mapping is refused by Traefik.
                    let key = parent_key(&stack);
                    if !stack.is_empty() && key != Some("cookie") && first_empty.is_none() {
                        first_empty = Some(empty(&stack, line, key));
                    }
                }
                finish_value(&mut stack);
            }
        }
    }
}

/// A scalar as a key (remembered for paths) or as a value (null refused).
fn scalar(
    stack: &mut [Frame],
    value: String,
    null: bool,
    line: usize,
) -> Result<(), DocumentError> {
    if let Some(Frame::Mapping {
        key: key @ None, ..
    }) = stack.last_mut()
    {
        *key = Some((value, line));
        return Ok(());
    }
    let refused = null && !stack.is_empty();
    // An empty value is reported at its key's line: the parser places it on the next token's.
    let line = match stack.last() {
        Some(Frame::Mapping {
            key: Some((_, key_line)),
            ..
        }) => *key_line,
        _ => line,
    };
    let error = refused.then(|| empty(stack, line, parent_key(stack)));
    finish_value(stack);
    error.map_or(Ok(()), Err)
}

/// The value of the top frame's current key (or item) is complete.
fn finish_value(stack: &mut [Frame]) {
    match stack.last_mut() {
        Some(Frame::Sequence { index }) => *index += 1,
        Some(Frame::Mapping { entries, key, .. }) => {
            *entries += 1;
            *key = None;
        }
        None => {}
    }
}

/// The key the value being read sits under, when it sits in a mapping.
fn parent_key(stack: &[Frame]) -> Option<&str> {
    match stack.last() {
        Some(Frame::Mapping { key, .. }) => key.as_ref().map(|(key, _)| key.as_str()),
        _ => None,
    }
}

fn empty(stack: &[Frame], line: usize, key: Option<&str>) -> DocumentError {
    let hint = match key {
        Some("http" | "tcp" | "udp" | "services") => " (leave the section out instead)",
        Some("servers") => " (write `servers: []` for a pool without servers)",
        Some("sticky") => " (a sticky load balancer needs `cookie`)",
        Some("cookie") => " (write `cookie: {}` for a default cookie)",
        _ => "",
    };
    DocumentError::EmptyElement {
        line,
        path: path_of(stack),
        hint,
    }
}

/// The path of the value being read: the keys and indexes of every frame.
fn path_of(stack: &[Frame]) -> String {
    let mut path = String::new();
    for frame in stack {
        match frame {
            Frame::Sequence { index } => path.push_str(&format!("[{index}]")),
            Frame::Mapping {
                key: Some((key, _)),
                ..
            } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&shorten(key));
            }
            Frame::Mapping { key: None, .. } => {}
        }
    }
    if path.is_empty() {
        "the root".to_owned()
    } else {
        path
    }
}

fn refuse_anchor_and_tag(line: usize, anchor: usize, tagged: bool) -> Result<(), DocumentError> {
    // The parser numbers anchors from 1; 0 means "no anchor".
    if anchor != 0 {
        return Err(DocumentError::UnsupportedYaml {
            line,
            feature: "anchors",
        });
    }
    if tagged {
        return Err(DocumentError::UnsupportedYaml {
            line,
            feature: "tags",
        });
    }
    Ok(())
}
