//! The date window of a gold order MERGE: an `order_date` condition that every row the batch's
//! keys can match satisfies. Order ids interleave (`5…` next to `C5…`, CDC integers), so the file
//! statistics of the key rule nothing out and a plain MERGE reads the whole table; dates arrive
//! clustered, so a MERGE restricted to the window reads the files of a few days instead.
//!
//! The window is built from the old rows of the batch's orders, read at the version the MERGE then
//! starts from (the caller checks that and commits strictly), plus the new rows to keep it tight
//! when an order is new. A row outside it could not be matched and would be inserted twice, which
//! is why the window never comes from the new rows alone: an order whose date moved is found
//! where it was.

use polars::prelude::*;

use crate::error::Result;
use crate::lake::rows::date_from_days;

#[derive(Debug, Clone, PartialEq)]
pub struct DateWindow {
    /// Lowest and highest date (days since the epoch), `None` when no row has a date.
    range: Option<(i32, i32)>,
    /// Some old row has no date: the window must take the null dates too.
    nulls: bool,
}

impl DateWindow {
    /// The window of `old` (the existing rows of the batch's keys) and `new` (their new rows),
    /// both with a date `column`.
    pub fn of(old: &DataFrame, new: &DataFrame, column: &str) -> Result<DateWindow> {
        let mut range: Option<(i32, i32)> = None;
        for df in [old, new] {
            let days = df.column(column)?.cast(&DataType::Int32)?;
            for d in days.i32()?.iter().flatten() {
                range = Some(range.map_or((d, d), |(lo, hi)| (lo.min(d), hi.max(d))));
            }
        }
        let nulls = old.column(column)?.null_count() > 0;
        Ok(DateWindow { range, nulls })
    }

    /// The window as a condition on target alias `t` (delta-rs keeps target-only conditions of
    /// the MERGE predicate for file skipping).
    pub fn sql(&self, column: &str) -> String {
        let c = format!("t.`{column}`");
        let day = |d: i32| format!("DATE '{}'", date_from_days(d).format("%Y-%m-%d"));
        match (self.range, self.nulls) {
            (Some((lo, hi)), false) => format!("{c} BETWEEN {} AND {}", day(lo), day(hi)),
            (Some((lo, hi)), true) => format!("({c} BETWEEN {} AND {} OR {c} IS NULL)", day(lo), day(hi)),
            // No dated row anywhere: only rows without a date can be the batch's.
            (None, _) => format!("{c} IS NULL"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(days: &[Option<i32>]) -> DataFrame {
        let s = Series::new("order_date".into(), days).cast(&DataType::Date).unwrap();
        DataFrame::new(days.len(), vec![s.into()]).unwrap()
    }

    // 2019-12-01 is day 18231.
    const D: i32 = 18231;

    #[test]
    fn covers_old_and_new_dates() {
        let w = DateWindow::of(&frame(&[Some(D + 5)]), &frame(&[Some(D), Some(D + 1)]), "order_date").unwrap();
        assert_eq!(w.sql("order_date"), "t.`order_date` BETWEEN DATE '2019-12-01' AND DATE '2019-12-06'");
    }

    #[test]
    fn a_moved_order_is_found_where_it_was() {
        // The order moved from 2019-11-01 to 2019-12-01: the old date must stay in the window.
        let w = DateWindow::of(&frame(&[Some(D - 30)]), &frame(&[Some(D)]), "order_date").unwrap();
        assert!(w.sql("order_date").contains("DATE '2019-11-01'"), "{}", w.sql("order_date"));
    }

    #[test]
    fn old_rows_without_a_date_take_the_nulls() {
        let w = DateWindow::of(&frame(&[None]), &frame(&[Some(D)]), "order_date").unwrap();
        assert_eq!(
            w.sql("order_date"),
            "(t.`order_date` BETWEEN DATE '2019-12-01' AND DATE '2019-12-01' OR t.`order_date` IS NULL)"
        );
        // New rows without a date need nothing: they match no existing row.
        let w = DateWindow::of(&frame(&[]), &frame(&[None, Some(D)]), "order_date").unwrap();
        assert!(!w.sql("order_date").contains("NULL"));
        let w = DateWindow::of(&frame(&[]), &frame(&[None]), "order_date").unwrap();
        assert_eq!(w.sql("order_date"), "t.`order_date` IS NULL");
    }
}
