//! The date window of a gold order write: an `order_date` condition that every existing row of
//! the batch's orders satisfies. Order ids interleave (`5…` next to `C5…`, CDC integers), so the
//! file statistics of the key rule nothing out and finding those rows means reading the whole
//! table; dates arrive clustered, so within the window it means reading the files of a few days.
//!
//! The window is built from the old rows of the batch's orders, read at the version the write then
//! starts from (the caller checks that and commits strictly), plus the new rows to keep it tight
//! when an order is new. A row outside it would not be replaced and the order would be there
//! twice, which is why the window never comes from the new rows alone: an order whose date moved
//! is found where it was.

use deltalake::datafusion::prelude::{Expr, col, lit};
use deltalake::datafusion::scalar::ScalarValue;
use polars::prelude::{DataFrame, DataType};

use crate::error::Result;

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

    /// The window as a filter on `column`: file statistics then skip the files outside it.
    pub fn expr(&self, column: &str) -> Expr {
        let c = col(format!("\"{column}\""));
        let day = |d: i32| lit(ScalarValue::Date32(Some(d)));
        match self.range {
            Some((lo, hi)) => {
                let inside = c.clone().between(day(lo), day(hi));
                // No dated row anywhere: only rows without a date can be the batch's.
                if self.nulls { inside.or(c.is_null()) } else { inside }
            }
            None => c.is_null(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::{NamedFrom, Series};

    fn frame(days: &[Option<i32>]) -> DataFrame {
        let s = Series::new("order_date".into(), days).cast(&DataType::Date).unwrap();
        DataFrame::new(days.len(), vec![s.into()]).unwrap()
    }

    // 2019-12-01 is day 18231.
    const D: i32 = 18231;

    fn days(lo: i32, hi: i32) -> Expr {
        col("\"order_date\"").between(lit(ScalarValue::Date32(Some(lo))), lit(ScalarValue::Date32(Some(hi))))
    }

    #[test]
    fn covers_old_and_new_dates() {
        let w = DateWindow::of(&frame(&[Some(D + 5)]), &frame(&[Some(D), Some(D + 1)]), "order_date").unwrap();
        assert_eq!(w.expr("order_date"), days(D, D + 5));
    }

    #[test]
    fn a_moved_order_is_found_where_it_was() {
        // The order moved from 2019-11-01 to 2019-12-01: the old date must stay in the window.
        let w = DateWindow::of(&frame(&[Some(D - 30)]), &frame(&[Some(D)]), "order_date").unwrap();
        assert_eq!(w.expr("order_date"), days(D - 30, D));
    }

    #[test]
    fn old_rows_without_a_date_take_the_nulls() {
        let w = DateWindow::of(&frame(&[None]), &frame(&[Some(D)]), "order_date").unwrap();
        assert_eq!(w.expr("order_date"), days(D, D).or(col("\"order_date\"").is_null()));
        // New rows without a date need nothing: they match no existing row.
        let w = DateWindow::of(&frame(&[]), &frame(&[None, Some(D)]), "order_date").unwrap();
        assert_eq!(w.expr("order_date"), days(D, D));
        let w = DateWindow::of(&frame(&[]), &frame(&[None]), "order_date").unwrap();
        assert_eq!(w.expr("order_date"), col("\"order_date\"").is_null());
    }
}
