//! [`assign_names`] kept up to date as origins come and go: a change renames only the origins of
//! the collision groups it touches.
//!
//! [`assign_names`] groups origins by the name the template gives them (their base name); the
//! smallest origin of a group keeps it and every other one gets the base name with its hash
//! suffix, unless that suffixed name is taken (then a counter goes into the hash). A group's
//! names therefore depend on its own members only, as long as no name is wanted twice: no
//! first suffixed name equals a base name or another first suffixed name. The book counts, for
//! every name, how many origins want it (a group wants its base name, each renamed member its
//! first suffixed name); while every count is one, updating the touched groups gives exactly
//! what [`assign_names`] gives for all origins. When some name is wanted twice (possible only
//! with hash-like names or hash clashes), the book takes every name from [`assign_names`] over
//! all origins instead, so the result is the same in every case.

use std::collections::{BTreeSet, HashMap};

use super::{NameCollision, NameTemplate, assign_names, base_name, origin_hash, suffixed};
use crate::backend::Origin;

/// The names of a changing set of origins, always equal to [`assign_names`] of that set.
#[derive(Clone, Debug)]
pub struct NameBook {
    template: NameTemplate,
    /// The base name of every origin.
    base: HashMap<Origin, String>,
    /// The origins of each base name, smallest (the one keeping it) first.
    groups: HashMap<String, BTreeSet<Origin>>,
    /// The name every origin is published under.
    names: HashMap<Origin, String>,
    /// How many origins want each name: one per group for its base name, one per renamed
    /// member for its first suffixed name.
    wanted: HashMap<String, u32>,
    /// Names wanted more than once.
    contested: usize,
    /// Base names of groups with more than one origin.
    shared: BTreeSet<String>,
}

impl NameBook {
    /// No origins yet.
    pub fn new(template: NameTemplate) -> NameBook {
        NameBook {
            template,
            base: HashMap::new(),
            groups: HashMap::new(),
            names: HashMap::new(),
            wanted: HashMap::new(),
            contested: 0,
            shared: BTreeSet::new(),
        }
    }

    pub fn template(&self) -> &NameTemplate {
        &self.template
    }

    /// The name of `origin`, when it is in the book.
    pub fn name(&self, origin: &Origin) -> Option<&str> {
        self.names.get(origin).map(String::as_str)
    }

    /// Number of origins.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Removes `removed` and adds `added` (origins already absent or present are ignored), and
    /// returns every origin whose name changed, appeared or disappeared, in order.
    pub fn update(
        &mut self,
        removed: impl IntoIterator<Item = Origin>,
        added: impl IntoIterator<Item = Origin>,
    ) -> BTreeSet<Origin> {
        let was_contested = self.contested > 0;
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let mut changed = BTreeSet::new();
        for origin in removed {
            let Some(base) = self.base.remove(&origin) else {
                continue;
            };
            if touched.insert(base.clone()) {
                self.withdraw(&base);
            }
            if let Some(group) = self.groups.get_mut(&base) {
                group.remove(&origin);
            }
            self.names.remove(&origin);
            changed.insert(origin);
        }
        for origin in added {
            if self.base.contains_key(&origin) {
                continue;
            }
            let base = base_name(&self.template, &origin);
            if touched.insert(base.clone()) {
                self.withdraw(&base);
            }
            self.groups
                .entry(base.clone())
                .or_default()
                .insert(origin.clone());
            self.base.insert(origin, base);
        }
        for base in &touched {
            self.claim(base);
        }
        if was_contested || self.contested > 0 {
            self.assign_all(&mut changed);
        } else {
            for base in &touched {
                self.assign_group(base, &mut changed);
            }
        }
        changed
    }

    /// Every collision, as [`assign_names`] reports them.
    pub fn collisions(&self) -> Vec<NameCollision> {
        let mut collisions = Vec::new();
        for name in &self.shared {
            let Some((kept, renamed)) = self.groups.get(name).and_then(|g| {
                let mut members = g.iter();
                members.next().map(|kept| (kept, members))
            }) else {
                continue;
            };
            for origin in renamed {
                collisions.push(NameCollision {
                    name: name.clone(),
                    kept: kept.clone(),
                    renamed: origin.clone(),
                    new_name: self.names.get(origin).cloned().unwrap_or_default(),
                });
            }
        }
        collisions
    }

    /// The names a group wants: its base name, then each renamed member's first suffixed name.
    fn wants(&self, base: &str) -> Vec<String> {
        let Some(group) = self.groups.get(base).filter(|g| !g.is_empty()) else {
            return Vec::new();
        };
        let mut names = vec![base.to_owned()];
        names.extend(
            group
                .iter()
                .skip(1)
                .map(|origin| suffixed(base, &origin_hash(origin, 0))),
        );
        names
    }

    /// Takes back what the group of `base` wants, before its members change.
    fn withdraw(&mut self, base: &str) {
        for name in self.wants(base) {
            let Some(count) = self.wanted.get_mut(&name) else {
                continue;
            };
            if *count == 2 {
                self.contested -= 1;
            }
            *count -= 1;
            if *count == 0 {
                self.wanted.remove(&name);
            }
        }
    }

    /// Records what the group of `base` wants, after its members changed.
    fn claim(&mut self, base: &str) {
        for name in self.wants(base) {
            let count = self.wanted.entry(name).or_insert(0);
            *count += 1;
            if *count == 2 {
                self.contested += 1;
            }
        }
        match self.groups.get(base).map(BTreeSet::len) {
            Some(0) => {
                self.groups.remove(base);
                self.shared.remove(base);
            }
            Some(1) => {
                self.shared.remove(base);
            }
            Some(_) => {
                self.shared.insert(base.to_owned());
            }
            None => {}
        }
    }

    /// Names the group of `base` when no name is contested: what [`assign_names`] gives it.
    fn assign_group(&mut self, base: &str, changed: &mut BTreeSet<Origin>) {
        let Some(group) = self.groups.get(base) else {
            return;
        };
        for (i, origin) in group.iter().enumerate() {
            let name = if i == 0 {
                base.to_owned()
            } else {
                suffixed(base, &origin_hash(origin, 0))
            };
            if self.names.get(origin) != Some(&name) {
                changed.insert(origin.clone());
                self.names.insert(origin.clone(), name);
            }
        }
    }

    /// Names every origin with [`assign_names`].
    fn assign_all(&mut self, changed: &mut BTreeSet<Origin>) {
        let origins: Vec<Origin> = self.base.keys().cloned().collect();
        let (names, _) = assign_names(&self.template, &origins);
        for (origin, name) in origins.into_iter().zip(names) {
            if self.names.get(&origin) != Some(&name) {
                changed.insert(origin.clone());
                self.names.insert(origin, name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn origin(namespace: &str, service: &str, port: &str) -> Origin {
        Origin {
            namespace: namespace.to_owned(),
            service: service.to_owned(),
            port: port.to_owned(),
        }
    }

    /// What [`assign_names`] gives the book's origins from scratch.
    fn from_scratch(book: &NameBook) -> (Vec<(Origin, String)>, Vec<NameCollision>) {
        let mut origins: Vec<Origin> = book.base.keys().cloned().collect();
        origins.sort();
        let (names, collisions) = assign_names(book.template(), &origins);
        (origins.into_iter().zip(names).collect(), collisions)
    }

    fn incremental(book: &NameBook) -> Vec<(Origin, String)> {
        let mut names: Vec<(Origin, String)> = book
            .names
            .iter()
            .map(|(o, n)| (o.clone(), n.clone()))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_collision_renames_only_its_group() {
        let mut book = NameBook::new(NameTemplate::default());
        let changed = book.update([], [origin("a-b", "c", "p"), origin("x", "y", "p")]);
        assert_eq!(changed.len(), 2);
        assert_eq!(book.name(&origin("a-b", "c", "p")), Some("a-b-c-p"));
        // `a`/`b-c` renders to the same name and is smaller: it takes the plain name.
        let changed = book.update([], [origin("a", "b-c", "p")]);
        assert_eq!(
            changed.into_iter().collect::<Vec<_>>(),
            [origin("a", "b-c", "p"), origin("a-b", "c", "p")]
        );
        assert_eq!(book.name(&origin("a", "b-c", "p")), Some("a-b-c-p"));
        let renamed = book.name(&origin("a-b", "c", "p")).unwrap().to_owned();
        assert!(renamed.starts_with("a-b-c-p-") && renamed.len() == "a-b-c-p-".len() + 8);
        assert_eq!(book.collisions().len(), 1);
        assert_eq!(book.collisions(), from_scratch(&book).1);
        // Gone again: the other one gets its name back.
        let changed = book.update([origin("a", "b-c", "p")], []);
        assert_eq!(changed.len(), 2);
        assert_eq!(book.name(&origin("a-b", "c", "p")), Some("a-b-c-p"));
        assert!(book.collisions().is_empty());
        assert_eq!(book.len(), 2);
    }

    #[test]
    fn a_name_wanted_twice_is_resolved_as_from_scratch() {
        let mut book = NameBook::new(NameTemplate::default());
        book.update([], [origin("a", "b-c", "p"), origin("a-b", "c", "p")]);
        let renamed = book.name(&origin("a-b", "c", "p")).unwrap().to_owned();
        // An origin whose plain name is that suffixed name.
        let intruder = intruder(book.template(), &renamed);
        let changed = book.update([], [intruder.clone()]);
        assert_eq!(book.name(&intruder), Some(renamed.as_str()));
        assert_eq!(incremental(&book), from_scratch(&book).0);
        assert!(changed.contains(&intruder));
        assert_ne!(book.name(&origin("a-b", "c", "p")), Some(renamed.as_str()));
        book.update([intruder], []);
        assert_eq!(book.name(&origin("a-b", "c", "p")), Some(renamed.as_str()));
        assert_eq!(incremental(&book), from_scratch(&book).0);
    }

    /// An origin the template renders to `name` (a name holding at least one '-').
    fn intruder(template: &NameTemplate, name: &str) -> Origin {
        let (head, tail) = name.rsplit_once('-').unwrap();
        match template.as_str() {
            "{service}" => origin("x", name, "p"),
            "{service}-{port}" => origin("x", head, tail),
            _ => {
                let (namespace, service) = head.split_once('-').unwrap();
                origin(namespace, service, tail)
            }
        }
    }

    fn label() -> impl Strategy<Value = String> {
        // A tiny alphabet with dashes, so renderings collide often; empty ports render to
        // names that end in '-'.
        "[ab](-?[ab]){0,2}"
    }

    fn an_origin() -> impl Strategy<Value = Origin> {
        (label(), label(), prop_oneof![label(), Just(String::new())])
            .prop_map(|(n, s, p)| origin(&n, &s, &p))
    }

    proptest! {
        #[test]
        fn incremental_names_equal_assign_names_from_scratch(
            steps in proptest::collection::vec(
                (
                    proptest::collection::vec(an_origin(), 0..4),
                    proptest::collection::vec(an_origin(), 0..6),
                    any::<bool>(),
                ),
                1..30,
            ),
            template in prop_oneof![
                Just("{namespace}-{service}-{port}"),
                Just("{service}-{port}"),
                Just("{service}"),
            ],
        ) {
            let mut book = NameBook::new(NameTemplate::parse(template).unwrap());
            for (removed, mut added, intrude) in steps {
                // Now and then an origin that wants someone's suffixed name as its plain name.
                if intrude && let Some(collision) = book.collisions().first() {
                    added.push(intruder(book.template(), &collision.new_name));
                }
                let before = incremental(&book);
                let changed = book.update(removed, added);
                let (expected, collisions) = from_scratch(&book);
                let after = incremental(&book);
                prop_assert_eq!(&after, &expected);
                prop_assert_eq!(book.collisions(), collisions);
                // Exactly the origins whose names differ are reported.
                let before: HashMap<Origin, String> = before.into_iter().collect();
                let after_map: HashMap<Origin, String> = after.into_iter().collect();
                let mut differing: BTreeSet<Origin> = BTreeSet::new();
                for origin in before.keys().chain(after_map.keys()) {
                    if before.get(origin) != after_map.get(origin) {
                        differing.insert(origin.clone());
                    }
                }
                prop_assert!(differing.is_subset(&changed));
            }
        }
    }
}
