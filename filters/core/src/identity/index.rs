//! Rule lookup by key, so a request's cost follows the number of rules that could
//! match it, not the number of rules in the policy.

use hashbrown::HashMap;

use crate::pattern::StringPattern;

/// Rules keyed by the patterns of one attribute (principal, namespace, path...).
#[derive(Debug, Default)]
pub(crate) struct KeyIndex {
    exact: HashMap<Box<str>, Vec<u32>>,
    prefix: AffixIndex,
    suffix: AffixIndex,
    any: Vec<u32>,
}

/// Prefix (or suffix) patterns grouped by text, with the distinct lengths in
/// use: a lookup probes one hash entry per distinct length.
#[derive(Debug, Default)]
struct AffixIndex {
    by_text: HashMap<Box<str>, Vec<u32>>,
    lengths: Vec<usize>,
}

impl AffixIndex {
    fn insert(&mut self, text: &str, rule: u32) {
        push_unique(self.by_text.entry_ref(text).or_default(), rule);
        if let Err(at) = self.lengths.binary_search(&text.len()) {
            self.lengths.insert(at, text.len());
        }
    }
}

fn push_unique(rules: &mut Vec<u32>, rule: u32) {
    if rules.last() != Some(&rule) {
        rules.push(rule);
    }
}

impl KeyIndex {
    pub(crate) fn insert(&mut self, pattern: &StringPattern, rule: u32) {
        match pattern {
            StringPattern::Any => push_unique(&mut self.any, rule),
            StringPattern::Exact(s) => push_unique(self.exact.entry_ref(&**s).or_default(), rule),
            StringPattern::Prefix(s) => self.prefix.insert(s, rule),
            StringPattern::Suffix(s) => self.suffix.insert(s, rule),
        }
    }

    /// Appends every rule with a pattern matching `key` (possibly with repeats).
    pub(crate) fn collect(&self, key: &str, out: &mut Vec<u32>) {
        out.extend_from_slice(&self.any);
        if let Some(rules) = self.exact.get(key) {
            out.extend_from_slice(rules);
        }
        for &len in self
            .prefix
            .lengths
            .iter()
            .take_while(|&&len| len <= key.len())
        {
            if let Some(rules) = key
                .get(..len)
                .and_then(|head| self.prefix.by_text.get(head))
            {
                out.extend_from_slice(rules);
            }
        }
        for &len in self
            .suffix
            .lengths
            .iter()
            .take_while(|&&len| len <= key.len())
        {
            if let Some(rules) = key
                .get(key.len().saturating_sub(len)..)
                .and_then(|tail| self.suffix.by_text.get(tail))
            {
                out.extend_from_slice(rules);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_find_exactly_the_matching_patterns() {
        let mut index = KeyIndex::default();
        let patterns = ["*", "/a", "/a/*", "/a/b*", "*.png", "/z"];
        for (i, p) in patterns.iter().enumerate() {
            index.insert(&StringPattern::parse(p).unwrap(), i as u32);
        }
        let cases: [(&str, &[u32]); 5] = [
            ("/a", &[0, 1]),
            ("/a/b.png", &[0, 2, 3, 4]),
            ("/a/c", &[0, 2]),
            ("/q", &[0]),
            ("", &[0]),
        ];
        for (key, want) in cases {
            let mut out = Vec::new();
            index.collect(key, &mut out);
            out.sort_unstable();
            out.dedup();
            assert_eq!(out, want, "{key}");
        }
    }

    #[test]
    fn multibyte_keys_never_split_a_character() {
        let mut index = KeyIndex::default();
        index.insert(&StringPattern::parse("ab*").unwrap(), 0);
        index.insert(&StringPattern::parse("*bc").unwrap(), 1);
        let mut out = Vec::new();
        index.collect("éé", &mut out);
        index.collect("a", &mut out);
        assert!(out.is_empty());
    }
}
