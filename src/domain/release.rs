//! Release copies (utlämnande): masking what a secrecy review takes out.
//!
//! Personnummer and samordningsnummer are always masked; e-mail addresses and
//! phone numbers on request. Pure text functions.

use super::personnummer;

/// What a release copy masks besides personnummer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MaskOptions {
    pub emails: bool,
    pub phones: bool,
}

pub const EMAIL_MASK: &str = "[e-post maskerad]";
pub const PHONE_MASK: &str = "[telefonnummer maskerat]";

/// Masks `text` for release. `year` is when it was written (for two-digit years).
pub fn mask(text: &str, year: i32, options: MaskOptions) -> String {
    let mut out = personnummer::mask(text, year);
    if options.emails {
        out = mask_emails(&out);
    }
    if options.phones {
        out = mask_phones(&out);
    }
    out
}

fn is_email_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '.' | '_' | '%' | '+' | '-')
}

/// Replaces `local@domain.tld` addresses.
pub fn mask_emails(text: &str) -> String {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    let mut i = 0;
    while i < chars.len() {
        if chars[i].1 != '@' {
            i += 1;
            continue;
        }
        let mut s = i;
        while s > 0 && is_email_char(chars[s - 1].1) {
            s -= 1;
        }
        let mut e = i + 1;
        while e < chars.len() && is_email_char(chars[e].1) {
            e += 1;
        }
        // Trailing dots belong to the sentence, not the address.
        while e > i + 1 && chars[e - 1].1 == '.' {
            e -= 1;
        }
        let domain: String = chars[i + 1..e].iter().map(|(_, c)| c).collect();
        let valid = s < i && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.');
        if valid {
            let start = chars[s].0;
            let end = chars.get(e).map_or(text.len(), |(b, _)| *b);
            if start >= last {
                out.push_str(&text[last..start]);
                out.push_str(EMAIL_MASK);
                last = end;
            }
            i = e;
        } else {
            i += 1;
        }
    }
    out.push_str(&text[last..]);
    out
}

/// Replaces phone numbers: a `+` or `0` followed by digits, spaces and
/// dashes holding 7 to 15 digits in all (e.g. `042-10 50 00`, `+46 70 123 45 67`).
pub fn mask_phones(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    let mut i = 0;
    while i < bytes.len() {
        let starts = (bytes[i] == b'+' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit))
            || (bytes[i] == b'0' && (i == 0 || !bytes[i - 1].is_ascii_digit()));
        if !starts || (i > 0 && bytes[i - 1].is_ascii_alphanumeric()) {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        let mut digit_count = usize::from(bytes[i].is_ascii_digit());
        let mut end = j;
        while j < bytes.len() {
            let b = bytes[j];
            if b.is_ascii_digit() {
                digit_count += 1;
                end = j + 1;
            } else if !(b == b' ' || b == b'-') || !bytes.get(j + 1).is_some_and(u8::is_ascii_digit) {
                break;
            }
            j += 1;
        }
        if (7..=15).contains(&digit_count) {
            out.push_str(&text[last..i]);
            out.push_str(PHONE_MASK);
            last = end;
            i = end;
        } else {
            i = j.max(i + 1);
        }
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(mask_emails("skriv till ada.berg@example.se."), format!("skriv till {EMAIL_MASK}."));
        assert_eq!(mask_emails("a@b.c och x@y.z"), format!("{EMAIL_MASK} och {EMAIL_MASK}"));
        assert_eq!(mask_emails("@ensam och kl@tt"), "@ensam och kl@tt");
        assert_eq!(mask_emails("åsa@kommun.se"), EMAIL_MASK);
    }

    #[test]
    fn phones() {
        assert_eq!(mask_phones("Ring 042-10 50 00 i dag"), format!("Ring {PHONE_MASK} i dag"));
        assert_eq!(mask_phones("+46 70 123 45 67"), PHONE_MASK);
        assert_eq!(mask_phones("0701234567"), PHONE_MASK);
        // Not phones: errand numbers, dates, times, short numbers.
        for keep in ["ärende 2026-000123", "2026-11-30", "kl 08.00", "rum 012", "10 personer"] {
            assert_eq!(mask_phones(keep), keep);
        }
    }

    #[test]
    fn release_masks_personnummer_always_and_the_rest_on_request() {
        let text = "811218-9876, ada@example.se, 070-123 45 67";
        assert_eq!(mask(text, 2026, MaskOptions::default()), "[personnummer maskerat], ada@example.se, 070-123 45 67");
        assert_eq!(
            mask(text, 2026, MaskOptions { emails: true, phones: true }),
            format!("[personnummer maskerat], {EMAIL_MASK}, {PHONE_MASK}")
        );
    }
}
