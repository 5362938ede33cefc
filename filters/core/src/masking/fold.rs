//! Unicode folding for detectors: digits of other scripts (full-width `４`,
//! Arabic-Indic `٤`...), Unicode spaces (NBSP, thin space, ideographic space,
//! tab), dashes (`‐`, `–`, `−`...), the full-width ASCII block and invisible
//! characters (zero-width space, soft hyphen) must not hide a card number, an
//! SSN or an IBAN from detectors written over ASCII.
//!
//! The folded copy is scanned; its matches are mapped back to byte ranges of
//! the original text, so that the masked output replaces the original
//! characters. Only text containing something to fold is copied.

/// A folded copy of a text, and where each of its bytes came from.
#[derive(Debug)]
pub(crate) struct Folded {
    pub(crate) text: String,
    /// Per folded byte: the original character's start and end byte offsets.
    origin: Vec<(usize, usize)>,
}

impl Folded {
    /// The original byte range of folded range `start..end` (non-empty).
    pub(crate) fn original(&self, start: usize, end: usize) -> Option<(usize, usize)> {
        let first = self.origin.get(start)?;
        let last = self.origin.get(end.checked_sub(1)?)?;
        Some((first.0, last.1))
    }
}

/// Unicode decimal digit blocks (general category Nd): each starts at its zero.
const DIGIT_ZEROS: [u32; 43] = [
    0x0660, 0x06F0, 0x07C0, 0x0966, 0x09E6, 0x0A66, 0x0AE6, 0x0B66, 0x0BE6, 0x0C66, 0x0CE6, 0x0D66,
    0x0DE6, 0x0E50, 0x0ED0, 0x0F20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90,
    0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10,
    0x104A0, 0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1FBF0,
];

/// What `c` folds to: `None` unchanged, `Some(None)` dropped, `Some(Some(a))`
/// the ASCII character `a`.
fn fold_char(c: char) -> Option<Option<char>> {
    let folded = match c {
        '\t'
        | '\u{a0}'
        | '\u{1680}'
        | '\u{2000}'..='\u{200a}'
        | '\u{202f}'
        | '\u{205f}'
        | '\u{3000}' => ' ',
        '\u{2010}'..='\u{2015}' | '\u{2043}' | '\u{2212}' | '\u{fe58}' | '\u{fe63}' => '-',
        '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}' | '\u{ad}' | '\u{180e}' => {
            return Some(None)
        }
        '\u{ff01}'..='\u{ff5e}' => u32::from(c).checked_sub(0xfee0).and_then(char::from_u32)?,
        _ if c.is_numeric() => {
            let code = u32::from(c);
            let digit = DIGIT_ZEROS
                .iter()
                .find_map(|&zero| code.checked_sub(zero).filter(|&d| d < 10))?;
            char::from_digit(digit, 10)?
        }
        _ => return None,
    };
    Some(Some(folded))
}

/// The folded copy of `text`, or `None` when nothing in it folds.
pub(crate) fn fold(text: &str) -> Option<Folded> {
    let mut changed = false;
    let mut out = String::with_capacity(text.len());
    let mut origin = Vec::with_capacity(text.len());
    for (i, c) in text.char_indices() {
        // The end of a character of `text`: at most `text.len()`.
        let end = i.saturating_add(c.len_utf8());
        match fold_char(c) {
            None => {
                out.push(c);
                origin.extend(std::iter::repeat_n((i, end), c.len_utf8()));
            }
            Some(None) => changed = true,
            Some(Some(a)) => {
                changed = true;
                out.push(a);
                origin.push((i, end));
            }
        }
    }
    changed.then_some(Folded { text: out, origin })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_fold_to_ascii_and_map_back_to_the_original_characters() {
        let cases = [
            ("４１１１\u{a0}1111", "4111 1111"),
            ("٤١١١\t1111", "4111 1111"),
            ("078\u{2010}05\u{2212}1120", "078-05-1120"),
            ("41\u{200b}11", "4111"),
            ("ＧＢ８２", "GB82"),
            ("𝟒𝟏", "41"),
        ];
        for (text, want) in cases {
            let folded = fold(text).unwrap_or_else(|| panic!("{text:?} not folded"));
            assert_eq!(folded.text, want, "{text:?}");
            assert_eq!(
                folded.original(0, folded.text.len()),
                Some((0, text.len())),
                "{text:?} maps back whole"
            );
        }
        assert!(fold("plain ascii 4111-1111").is_none());
        assert!(fold("déjà vu").is_none(), "letters are not folded");
    }
}
