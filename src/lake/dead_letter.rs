//! The dead-letter table `bronze/_dead_letters`: messages that could not be decoded, with the reason.
//! Appended exactly once per bronze commit (`txn` `<group>/dead_letters/<topic>` → bronze version),
//! so a replay after a crash never lists a bad message twice.

use deltalake::DeltaTable;
use deltalake::kernel::Transaction;
use deltalake::protocol::SaveMode;

use super::{commit_with, rows};
use crate::error::Result;
use crate::model::DeadLetter;

pub fn table_name(bronze_prefix: &str) -> String {
    format!("{bronze_prefix}/_dead_letters")
}

pub async fn append(table: DeltaTable, rows: &[DeadLetter], txn: Transaction, now_us: i64) -> Result<DeltaTable> {
    let b = rows::dead_letters(rows, now_us)?;
    let props = commit_with(vec![txn]);
    Ok(table.write(vec![b]).with_save_mode(SaveMode::Append).with_commit_properties(props).await?)
}
