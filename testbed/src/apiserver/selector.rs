//! Label and field selectors with the grammar and semantics of `k8s.io/apimachinery/pkg/labels`
//! and `pkg/fields`, as far as list and watch requests use them.

use serde_json::Value;
use std::collections::BTreeSet;

/// Why a selector string was rejected; the API server answers it with a 400 `Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SelectorError(pub(crate) String);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Operator {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    operator: Operator,
    values: BTreeSet<String>,
}

impl Requirement {
    fn matches(&self, labels: Option<&serde_json::Map<String, Value>>) -> bool {
        let value = labels
            .and_then(|l| l.get(&self.key))
            .and_then(Value::as_str);
        match self.operator {
            Operator::Equals | Operator::In => value.is_some_and(|v| self.values.contains(v)),
            // NB: like the real server, `!=` and `notin` also select objects without the key.
            Operator::NotEquals | Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(actual), Some(bound)) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|v| v.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    actual > bound
                } else {
                    actual < bound
                }
            }
        }
    }
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LabelSelector {
    requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Not,
    Equals,
    DoubleEquals,
    NotEquals,
    GreaterThan,
    LessThan,
    OpenParen,
    CloseParen,
    Comma,
}

fn tokenize(input: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '!' => {
                chars.next();
                if chars.peek() == Some(&'=') {
                    chars.next();
                    tokens.push(Token::NotEquals);
                } else {
                    tokens.push(Token::Not);
                }
            }
            '=' => {
                chars.next();
                if chars.peek() == Some(&'=') {
                    chars.next();
                    tokens.push(Token::DoubleEquals);
                } else {
                    tokens.push(Token::Equals);
                }
            }
            '>' => {
                chars.next();
                tokens.push(Token::GreaterThan);
            }
            '<' => {
                chars.next();
                tokens.push(Token::LessThan);
            }
            '(' => {
                chars.next();
                tokens.push(Token::OpenParen);
            }
            ')' => {
                chars.next();
                tokens.push(Token::CloseParen);
            }
            ',' => {
                chars.next();
                tokens.push(Token::Comma);
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || "!=><(),".contains(c) {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    tokens
}

/// `[prefix/]name`: prefix a DNS subdomain, name at most 63 characters of alphanumerics, `-`,
/// `_` and `.`, starting and ending with an alphanumeric.
fn valid_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            })
    });
    prefix_ok && !name.is_empty() && valid_value(name)
}

/// A label value: empty, or at most 63 characters as in [`valid_key`]'s name part.
fn valid_value(value: &str) -> bool {
    if value.is_empty() {
        return true;
    }
    let alnum = |c: char| c.is_ascii_alphanumeric();
    value.len() <= 63
        && value
            .chars()
            .all(|c| alnum(c) || c == '-' || c == '_' || c == '.')
        && value.chars().next().is_some_and(alnum)
        && value.chars().last().is_some_and(alnum)
}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter.
    pub(crate) fn parse(input: &str) -> Result<Self, SelectorError> {
        let tokens = tokenize(input);
        let mut requirements = Vec::new();
        let mut pos = 0;
        if tokens.is_empty() {
            return Ok(Self::default());
        }
        loop {
            let (requirement, next) = parse_requirement(&tokens, pos)?;
            requirements.push(requirement);
            pos = next;
            match tokens.get(pos) {
                None => break,
                Some(Token::Comma) => pos += 1,
                Some(other) => {
                    return Err(SelectorError(format!(
                        "found '{}', expected: ',' or 'end of string'",
                        describe(other)
                    )));
                }
            }
        }
        Ok(Self { requirements })
    }

    /// Whether an object (its `metadata.labels`) is selected.
    pub(crate) fn matches(&self, object: &Value) -> bool {
        let labels = object
            .pointer("/metadata/labels")
            .and_then(Value::as_object);
        self.requirements.iter().all(|r| r.matches(labels))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

fn describe(token: &Token) -> String {
    match token {
        Token::Word(w) => w.clone(),
        Token::Not => "!".into(),
        Token::Equals => "=".into(),
        Token::DoubleEquals => "==".into(),
        Token::NotEquals => "!=".into(),
        Token::GreaterThan => ">".into(),
        Token::LessThan => "<".into(),
        Token::OpenParen => "(".into(),
        Token::CloseParen => ")".into(),
        Token::Comma => ",".into(),
    }
}

fn parse_key(tokens: &[Token], pos: usize) -> Result<String, SelectorError> {
    match tokens.get(pos) {
        Some(Token::Word(key)) if valid_key(key) => Ok(key.clone()),
        Some(Token::Word(key)) => Err(SelectorError(format!(
            "unable to parse requirement: key: Invalid value: \"{key}\": name part must consist of \
             alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric \
             character"
        ))),
        Some(other) => Err(SelectorError(format!(
            "found '{}', expected: identifier",
            describe(other)
        ))),
        None => Err(SelectorError("found '', expected: identifier".into())),
    }
}

fn check_value(value: &str) -> Result<(), SelectorError> {
    if valid_value(value) {
        Ok(())
    } else {
        Err(SelectorError(format!(
            "unable to parse requirement: values[0]: Invalid value: \"{value}\": a valid label must \
             be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must \
             start and end with an alphanumeric character"
        )))
    }
}

fn parse_requirement(tokens: &[Token], pos: usize) -> Result<(Requirement, usize), SelectorError> {
    if tokens.get(pos) == Some(&Token::Not) {
        let key = parse_key(tokens, pos + 1)?;
        let requirement = Requirement {
            key,
            operator: Operator::DoesNotExist,
            values: BTreeSet::new(),
        };
        return Ok((requirement, pos + 2));
    }
    let key = parse_key(tokens, pos)?;
    let op_pos = pos + 1;
    let operator = match tokens.get(op_pos) {
        None | Some(Token::Comma) => {
            let requirement = Requirement {
                key,
                operator: Operator::Exists,
                values: BTreeSet::new(),
            };
            return Ok((requirement, op_pos));
        }
        Some(Token::Equals | Token::DoubleEquals) => Operator::Equals,
        Some(Token::NotEquals) => Operator::NotEquals,
        Some(Token::GreaterThan) => Operator::GreaterThan,
        Some(Token::LessThan) => Operator::LessThan,
        Some(Token::Word(w)) if w == "in" => Operator::In,
        Some(Token::Word(w)) if w == "notin" => Operator::NotIn,
        Some(other) => {
            return Err(SelectorError(format!(
                "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                describe(other)
            )));
        }
    };
    let (values, pos) = if matches!(operator, Operator::In | Operator::NotIn) {
        parse_set(tokens, op_pos + 1)?
    } else {
        parse_single_value(tokens, op_pos + 1, &operator)?
    };
    Ok((
        Requirement {
            key,
            operator,
            values,
        },
        pos,
    ))
}

/// The value set of `in` and `notin` at `pos`: `(v1, v2, ...)`, where empty members are
/// allowed, as in `(a,)`; the position after the `)`.
fn parse_set(tokens: &[Token], pos: usize) -> Result<(BTreeSet<String>, usize), SelectorError> {
    if tokens.get(pos) != Some(&Token::OpenParen) {
        return Err(SelectorError(format!(
            "found '{}', expected: '('",
            tokens.get(pos).map(describe).unwrap_or_default()
        )));
    }
    let mut pos = pos + 1;
    let mut values = BTreeSet::new();
    let mut expect_value = true;
    loop {
        match tokens.get(pos) {
            Some(Token::CloseParen) => {
                if expect_value && !values.is_empty() {
                    values.insert(String::new());
                }
                pos += 1;
                break;
            }
            Some(Token::Comma) => {
                if expect_value {
                    values.insert(String::new());
                }
                expect_value = true;
                pos += 1;
            }
            Some(Token::Word(v)) if expect_value => {
                check_value(v)?;
                values.insert(v.clone());
                expect_value = false;
                pos += 1;
            }
            Some(other) => {
                return Err(SelectorError(format!(
                    "found '{}', expected: ',', or ')'",
                    describe(other)
                )));
            }
            None => return Err(SelectorError("found '', expected: ')'".into())),
        }
    }
    if values.is_empty() {
        return Err(SelectorError(
            "unable to parse requirement: values: Invalid value: []: for 'in', 'notin' \
             operators, values set can't be empty"
                .into(),
        ));
    }
    Ok((values, pos))
}

/// The one value of `=`, `==`, `!=`, `gt` and `lt` at `pos` (`key=` selects the empty value);
/// the position after it.
fn parse_single_value(
    tokens: &[Token],
    mut pos: usize,
    operator: &Operator,
) -> Result<(BTreeSet<String>, usize), SelectorError> {
    let value = match tokens.get(pos) {
        Some(Token::Word(v)) => {
            pos += 1;
            v.clone()
        }
        None | Some(Token::Comma) => String::new(),
        Some(other) => {
            return Err(SelectorError(format!(
                "found '{}', expected: identifier",
                describe(other)
            )));
        }
    };
    if matches!(operator, Operator::GreaterThan | Operator::LessThan) {
        if value.parse::<i64>().is_err() {
            return Err(SelectorError(format!(
                "unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an \
                 integer: {value}"
            )));
        }
    } else {
        check_value(&value)?;
    }
    Ok((BTreeSet::from([value]), pos))
}

/// A parsed field selector over `metadata.name`, `metadata.namespace` and the resource's own
/// field labels (such as `involvedObject.name` on core events), with `=`, `==` and `!=`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldSelector {
    /// (JSON pointer of the field, equal or not, value).
    terms: Vec<(String, bool, String)>,
}

const NAME: &str = "/metadata/name";

/// The JSON pointer a field label reads: `a.b` is `/a/b`; `source` (core events) is the
/// source's component.
fn field_pointer(label: &str) -> String {
    match label {
        "source" => "/source/component".to_owned(),
        other => format!("/{}", other.replace('.', "/")),
    }
}

impl FieldSelector {
    /// Parses the `fieldSelector` query parameter; `labels` are the fields the resource
    /// supports besides `metadata.name` and `metadata.namespace`.
    pub(crate) fn parse(input: &str, labels: &[&str]) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        for term in input.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(SelectorError(format!(
                    "invalid selector: '{input}'; can't understand '{term}'"
                )));
            };
            let field = field.trim();
            if !matches!(field, "metadata.name" | "metadata.namespace") && !labels.contains(&field)
            {
                return Err(SelectorError(format!("field label not supported: {field}")));
            }
            terms.push((field_pointer(field), equal, value.trim().to_owned()));
        }
        Ok(Self { terms })
    }

    pub(crate) fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|(pointer, equal, value)| {
            let actual = object
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or("");
            (actual == value) == *equal
        })
    }

    /// The name this selector pins (`metadata.name=x`), which turns a scan into a lookup.
    pub(crate) fn exact_name(&self) -> Option<&str> {
        self.terms
            .iter()
            .find(|(pointer, equal, _)| pointer == NAME && *equal)
            .map(|(_, _, v)| v.as_str())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "shop", "labels": labels}})
    }

    fn sel(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap()
    }

    #[test]
    fn equality_operators() {
        let o = obj(json!({"app": "web", "tier": "front"}));
        assert!(sel("app=web").matches(&o));
        assert!(sel("app==web").matches(&o));
        assert!(!sel("app=db").matches(&o));
        assert!(sel("app!=db").matches(&o));
        assert!(!sel("app!=web").matches(&o));
        assert!(sel("missing!=x").matches(&o));
        assert!(sel("app=web,tier=front").matches(&o));
        assert!(!sel("app=web,tier=back").matches(&o));
        assert!(sel(" app = web , tier == front ").matches(&o));
    }

    #[test]
    fn set_operators() {
        let o = obj(json!({"app": "web", "env": ""}));
        assert!(sel("app in (web, db)").matches(&o));
        assert!(!sel("app in (db)").matches(&o));
        assert!(sel("app notin (db)").matches(&o));
        assert!(!sel("app notin (web,db)").matches(&o));
        assert!(sel("missing notin (x)").matches(&o));
        assert!(sel("app").matches(&o));
        assert!(!sel("!app").matches(&o));
        assert!(sel("!missing").matches(&o));
        assert!(sel("env").matches(&o));
        assert!(sel("env=").matches(&o));
        assert!(
            sel("k8s-service-discovery").matches(&obj(json!({"k8s-service-discovery": "true"})))
        );
        assert!(
            sel("example.com/team in (a,b),app")
                .matches(&obj(json!({"example.com/team": "b", "app": "x"})))
        );
    }

    #[test]
    fn numeric_operators() {
        let o = obj(json!({"replicas": "3"}));
        assert!(sel("replicas>2").matches(&o));
        assert!(!sel("replicas<2").matches(&o));
    }

    #[test]
    fn no_labels_at_all() {
        let o = json!({"metadata": {"name": "x"}});
        assert!(sel("").matches(&o));
        assert!(!sel("app").matches(&o));
        assert!(sel("!app").matches(&o));
        assert!(sel("app!=web").matches(&o));
    }

    #[test]
    fn invalid_selectors_are_rejected() {
        for bad in [
            "app in web",
            "app in ()",
            "=web",
            "app=we b",
            "app===web",
            "app in (a",
            "-app=web",
            "app=web,",
            "a=b c",
            "x>y",
            "app notin",
        ] {
            assert!(
                LabelSelector::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn field_selectors() {
        let o = obj(json!({}));
        let s =
            FieldSelector::parse("metadata.name=web,metadata.namespace!=kube-system", &[]).unwrap();
        assert!(s.matches(&o));
        assert_eq!(s.exact_name(), Some("web"));
        assert!(
            !FieldSelector::parse("metadata.name==db", &[])
                .unwrap()
                .matches(&o)
        );
        assert!(FieldSelector::parse("spec.clusterIP=1.2.3.4", &[]).is_err());
        assert!(FieldSelector::parse("metadata.name", &[]).is_err());
        assert!(FieldSelector::parse("", &[]).unwrap().matches(&o));
        let event =
            json!({"involvedObject": {"name": "web", "uid": "u-1"}, "source": {"component": "x"}});
        let labels = ["involvedObject.name", "involvedObject.uid", "source"];
        let s = FieldSelector::parse(
            "involvedObject.name=web,involvedObject.uid=u-1,source=x",
            &labels,
        )
        .unwrap();
        assert!(s.matches(&event));
        assert!(
            !FieldSelector::parse("involvedObject.uid=u-2", &labels)
                .unwrap()
                .matches(&event)
        );
        assert!(FieldSelector::parse("involvedObject.kind=Service", &labels).is_err());
    }
}
