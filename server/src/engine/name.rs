//! [`Name`]: a resource or rule name as the engine hands it out with every decision and lease.
//!
//! Configured names are few (bounded by the config) and asked for on every request, so they are interned
//! for the life of the process ([`intern`]): handing one out copies a pointer and counts nothing, where a
//! shared `Arc<str>` would count a reference on a line every serving thread writes. A concrete resource
//! that a client named under a pattern (`partner.*`) is unbounded, so it is shared, never interned.

use std::{
    borrow::Borrow,
    collections::HashSet,
    fmt,
    hash::{Hash, Hasher},
    ops::Deref,
    sync::{Arc, Mutex, PoisonError},
};

/// The process-lifetime copy of `name`: the same `&'static str` for the same text. Only configured names
/// come here (rule names), so what is kept is bounded by the names ever configured in this process.
pub fn intern(name: &str) -> &'static str {
    static NAMES: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let mut names = NAMES.lock().unwrap_or_else(PoisonError::into_inner);
    let names = names.get_or_insert_with(HashSet::new);
    if let Some(&interned) = names.get(name) {
        return interned;
    }
    let interned: &'static str = Box::leak(Box::from(name));
    names.insert(interned);
    interned
}

/// A resource name: a configured one (interned) or one a client supplied under a pattern (shared).
/// Compares, hashes and orders as its text.
#[derive(Clone)]
pub enum Name {
    /// A configured name (see [`intern`]).
    Configured(&'static str),
    /// A concrete name matched by a pattern.
    Given(Arc<str>),
}

impl Name {
    /// The text.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Configured(s) => s,
            Self::Given(s) => s,
        }
    }
}

impl Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Name {}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&'static str> for Name {
    fn from(s: &'static str) -> Self {
        Self::Configured(s)
    }
}

impl From<Arc<str>> for Name {
    fn from(s: Arc<str>) -> Self {
        Self::Given(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_returns_one_copy_per_text() {
        let a = intern("name-test-a");
        let b = intern(&String::from("name-test-a"));
        assert!(std::ptr::eq(a, b));
        assert!(!std::ptr::eq(a, intern("name-test-b")));
    }

    #[test]
    fn names_compare_and_hash_as_their_text() {
        use std::collections::HashSet;
        let configured = Name::Configured(intern("r"));
        let given = Name::Given(Arc::from("r"));
        assert_eq!(configured, given);
        let set: HashSet<Name> = [configured, given].into_iter().collect();
        assert_eq!(set.len(), 1);
        assert!(set.contains("r"));
        assert_eq!(
            Name::from(intern("a")).cmp(&Name::Given(Arc::from("b"))),
            std::cmp::Ordering::Less
        );
    }
}
