//! Keys as the lake orders them, and the key ranges a lookup filters by. Files are written sorted
//! by key and split by [`family`] ([`super::rewrite`]), so each covers a narrow range of ids and a
//! lookup of a batch's keys ([`super::read::scan_keys`], the rewrite's `locate`) skips every file
//! whose statistics fall outside [`key_ranges`]. How tight those ranges are decides how many files
//! a batch decodes.

use std::collections::BTreeMap;

use deltalake::datafusion::prelude::{Expr, col, lit};

/// A key's family: its leading non-digit characters and the length of the rest. Ids of one family
/// ("5…" orders, "C5…" cancellations, "shop.sales-…" items) grow together, and as strings they
/// compare like numbers only at one length: "999999" sorts after "1000000". With the length in
/// the family, the ids past a new digit are a family of their own, so no range (a filter, a
/// file) spans from "1…" to "9…" when the numbering crosses a power of ten.
pub(crate) fn family(key: &str) -> (&str, usize) {
    let digits = key.find(|c: char| c.is_ascii_digit()).unwrap_or(key.len());
    (&key[..digits], key.len() - digits)
}

/// Orders keys by family, then by the key: the order files are written in ([`super::rewrite`])
/// so that each family's keys are one contiguous run.
pub(crate) fn by_family(a: &str, b: &str) -> std::cmp::Ordering {
    (family(a), a).cmp(&(family(b), b))
}

/// Families beyond which [`key_ranges`] gives one overall range (a filter stays small).
const MAX_FAMILIES: usize = 8;

/// Ranges a filter holds at most: each is two comparisons on every row a scan decodes.
const MAX_RANGES: usize = 12;

/// A gap between a family's keys splits its range when it is at least this share of the range
/// and [`MIN_GAP_TO_MEDIAN`] times the median gap. A batch of new orders plus a change to last
/// month's order then reads the file of that order and the newest files, not every file in
/// between; keys close together or spread evenly stay one range.
const MIN_GAP_SHARE: f64 = 1.0 / 16.0;
const MIN_GAP_TO_MEDIAN: f64 = 4.0;

/// A filter that every one of `keys` passes: `column` within a few [min, max] ranges per family
/// of the keys, split where the keys leave wide gaps. A scan skips the files whose statistics fall
/// outside every range. `None` without keys.
pub(crate) fn key_ranges<'a>(column: &str, keys: impl IntoIterator<Item = &'a str>) -> Option<Expr> {
    let mut families: BTreeMap<(&str, usize), Vec<&str>> = BTreeMap::new();
    for k in keys {
        families.entry(family(k)).or_default().push(k);
    }
    for keys in families.values_mut() {
        keys.sort_unstable();
        keys.dedup();
    }
    let ranges: Vec<(&str, &str)> = if families.len() > MAX_FAMILIES {
        let lo = families.values().filter_map(|k| k.first()).min()?;
        let hi = families.values().filter_map(|k| k.last()).max()?;
        vec![(*lo, *hi)]
    } else {
        split_at_gaps(&families)
    };
    let c = col(format!("\"{column}\""));
    ranges.into_iter().map(|(lo, hi)| c.clone().gt_eq(lit(lo)).and(c.clone().lt_eq(lit(hi)))).reduce(Expr::or)
}

/// Each family's [min, max], cut at its widest gaps (see [`MIN_GAP_SHARE`]), widest first,
/// [`MAX_RANGES`] ranges in all.
fn split_at_gaps<'a>(families: &BTreeMap<(&str, usize), Vec<&'a str>>) -> Vec<(&'a str, &'a str)> {
    // (share of its family's range, family, index of the key after the gap)
    let mut gaps: Vec<(f64, usize, usize)> = Vec::new();
    for (f, (&(prefix, _), keys)) in families.iter().enumerate() {
        let rest = |k: &'a str| &k[prefix.len()..];
        // Digits (the usual ids) are parsed once each, not once per gap on either side.
        let numbers: Option<Vec<u128>> = keys.iter().map(|k| rest(k).parse().ok()).collect();
        let mut between: Vec<f64> = match numbers {
            Some(n) => n.windows(2).map(|p| p[1].saturating_sub(p[0]) as f64).collect(),
            None => keys.windows(2).map(|p| distance(rest(p[0]), rest(p[1]))).collect(),
        };
        let span: f64 = between.iter().sum();
        if span <= 0.0 {
            continue;
        }
        between.iter_mut().for_each(|g| *g /= span);
        // The lower median, so that one far key among two close ones still stands out; a lone
        // gap (two keys) is compared with the range alone.
        let median = match between.len() {
            0 | 1 => 0.0,
            n => *between.clone().select_nth_unstable_by((n - 1) / 2, f64::total_cmp).1,
        };
        let min_share = MIN_GAP_SHARE.max(MIN_GAP_TO_MEDIAN * median);
        for (i, share) in between.drain(..).enumerate() {
            if share >= min_share {
                gaps.push((share, f, i + 1));
            }
        }
    }
    gaps.sort_by(|a, b| b.0.total_cmp(&a.0));
    gaps.truncate(MAX_RANGES.saturating_sub(families.len()));
    let mut cuts: Vec<(usize, usize)> = gaps.into_iter().map(|(_, f, i)| (f, i)).collect();
    cuts.sort_unstable();
    let mut ranges = Vec::new();
    for (f, keys) in families.values().enumerate() {
        let mut start = 0;
        for &(_, at) in cuts.iter().filter(|c| c.0 == f) {
            ranges.push((keys[start], keys[at - 1]));
            start = at;
        }
        if let (Some(lo), Some(hi)) = (keys.get(start), keys.last()) {
            ranges.push((*lo, *hi));
        }
    }
    ranges
}

/// How far apart two keys of one family are (`b` ≥ `a`, both without the family's prefix, so of
/// one length): their difference as numbers when they are digits, else as base-256 numbers from
/// the first byte they differ in (eight bytes are plenty to compare gaps).
fn distance(a: &str, b: &str) -> f64 {
    if let (Ok(x), Ok(y)) = (a.parse::<u128>(), b.parse::<u128>()) {
        return y.saturating_sub(x) as f64;
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let Some(at) = a.iter().zip(b).position(|(x, y)| x != y) else { return 0.0 };
    let digits = |s: &[u8]| s[at..].iter().take(8).fold(0.0, |n, &d| n * 256.0 + f64::from(d));
    let scale = 256f64.powi((a.len().min(b.len()) - at).saturating_sub(8) as i32);
    (digits(b) - digits(a)).max(0.0) * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_split_at_the_first_digit_and_by_length() {
        assert_eq!(family("581475"), ("", 6));
        assert_eq!(family("1000000"), ("", 7));
        assert_eq!(family("C581475"), ("C", 6));
        assert_eq!(family("shop.sales-2-41"), ("shop.sales-", 4));
        assert_eq!(family("abc"), ("abc", 0));
        let mut keys = vec!["1000001", "C999999", "999998", "1000000", "C1000000", "999999"];
        keys.sort_by(|a, b| by_family(a, b));
        assert_eq!(keys, ["999998", "999999", "1000000", "1000001", "C999999", "C1000000"]);
    }

    fn ranges(keys: &[&str]) -> Vec<(String, String)> {
        let e = key_ranges("k", keys.iter().copied()).map(|e| e.to_string()).unwrap_or_default();
        // `k >= Utf8("lo") AND k <= Utf8("hi")`, one per range.
        let bounds: Vec<String> = e.split("Utf8(\"").skip(1).map(|s| s[..s.find('"').unwrap()].to_string()).collect();
        bounds.chunks(2).map(|b| (b[0].clone(), b[1].clone())).collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn numbering_past_a_power_of_ten_keeps_ranges_narrow() {
        // As one string range, 999990..1000010 would be "1000000".."999999": almost every key.
        let keys: Vec<String> = (999_990..1_000_010).map(|n: u32| n.to_string()).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        assert_eq!(ranges(&keys), pairs(&[("999990", "999999"), ("1000000", "1000009")]));
    }

    #[test]
    fn key_ranges_cover_every_key_with_one_range_per_family() {
        assert!(key_ranges("order_id", []).is_none());
        // Two keys are a gap alone, and as two points they miss whatever lies between.
        assert_eq!(ranges(&["581470", "581475"]), pairs(&[("581470", "581470"), ("581475", "581475")]));
        assert_eq!(
            ranges(&["581475", "C581480", "581470", "C581476", "581472", "C581478"]),
            pairs(&[("581470", "581475"), ("C581476", "C581480")])
        );
        // Many families: one overall range.
        let keys: Vec<String> = (b'a'..=b'z').map(|c| format!("{}1", c as char)).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        assert_eq!(ranges(&keys), pairs(&[("a1", "z1")]));
    }

    #[test]
    fn a_change_to_an_old_order_is_a_range_of_its_own() {
        // New orders 2000000..2000999 and a change to 1000123: the files between stay unread.
        let mut keys: Vec<String> = (2_000_000..2_001_000).map(|n: u32| n.to_string()).collect();
        keys.push("1000123".into());
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        assert_eq!(ranges(&keys), pairs(&[("1000123", "1000123"), ("2000000", "2000999")]));
    }

    #[test]
    fn evenly_spread_keys_stay_one_range_and_splits_are_bounded() {
        let even: Vec<String> = (0..100u32).map(|n| (1_000_000 + n * 1_000).to_string()).collect();
        let even: Vec<&str> = even.iter().map(String::as_str).collect();
        assert_eq!(ranges(&even), pairs(&[("1000000", "1099000")]));
        // New orders and 15 old ones each a fifteenth of the range apart: cut, but into no more
        // than MAX_RANGES ranges, which still cover every key.
        let mut far: Vec<String> = (2_000_000..2_001_000u32).map(|n| n.to_string()).collect();
        far.extend((0..15u32).map(|n| (1_000_000 + n * 66_000).to_string()));
        let far: Vec<&str> = far.iter().map(String::as_str).collect();
        let got = ranges(&far);
        assert_eq!(got.len(), MAX_RANGES, "{got:?}");
        for k in &far {
            assert!(got.iter().any(|(lo, hi)| lo.as_str() <= *k && *k <= hi.as_str()), "{k} outside {got:?}");
        }
    }

    #[test]
    fn gaps_between_text_keys_are_measured_from_the_first_differing_byte() {
        assert_eq!(distance("0042", "0050"), 8.0);
        assert!(distance("a-aa", "a-ab") < distance("a-aa", "a-ba"));
        assert!(distance("a-aa", "z-aa") > distance("a-aa", "a-zz"));
        assert_eq!(distance("same", "same"), 0.0);
        // Text keys of one family ("s-" and six more): a far one is split off, close ones stay together.
        let got = ranges(&["s-1-aaaa", "s-1-aaab", "s-1-aaac", "s-9-zzzz"]);
        assert_eq!(got, pairs(&[("s-1-aaaa", "s-1-aaac"), ("s-9-zzzz", "s-9-zzzz")]));
    }
}
