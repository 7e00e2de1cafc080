//! `orderlake status [--json]`: where the pipeline stands — per partition the end offset, the
//! offset stored in bronze and the lag; every table's version and row count; MongoDB's published
//! version. Gathered once, rendered as text for people or JSON for scripts and monitors.

use std::fmt::Write;

use rdkafka::consumer::BaseConsumer;
use serde::Serialize;

use crate::config::Settings;
use crate::error::Result;
use crate::lake::{Lake, bronze, commits, read, version_of};
use crate::sink::mongo::MongoSink;
use crate::source::kafka;

#[derive(Debug, Serialize)]
pub struct Status {
    pub lake: String,
    pub group: String,
    pub partitions: Vec<PartitionStatus>,
    pub tables: Vec<TableStatus>,
    /// `None` when publishing to MongoDB is off.
    pub mongodb: Option<MongoStatus>,
}

#[derive(Debug, Serialize)]
pub struct PartitionStatus {
    pub topic: String,
    pub partition: i32,
    pub end_offset: i64,
    /// Last offset stored in bronze (`None`: nothing yet).
    pub bronze_offset: Option<i64>,
    pub lag: i64,
}

#[derive(Debug, Serialize)]
pub struct TableStatus {
    pub table: String,
    /// `None`: not created yet.
    pub version: Option<u64>,
    pub rows: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct MongoStatus {
    pub database: String,
    pub topics: Vec<PublishStatus>,
}

#[derive(Debug, Serialize)]
pub struct PublishStatus {
    pub topic: String,
    pub bronze_version: i64,
    /// Last bronze version whose gold is confirmed in MongoDB (`None`: nothing yet).
    pub published: Option<i64>,
    /// Bronze versions MongoDB is behind (degraded or catching up when > 0).
    pub behind: i64,
}

pub async fn gather(settings: &Settings) -> Result<Status> {
    let lake = Lake::new(settings);
    let consumer: BaseConsumer = kafka::base_config(settings).create()?;
    let mut partitions = Vec::new();
    for topic in settings.topics() {
        let ends = kafka::end_offsets(&consumer, settings, &topic)?;
        let table = lake.open(&bronze::table_name(&settings.bronze_prefix, &topic)).await?;
        let mut parts: Vec<_> = ends.into_iter().collect();
        parts.sort();
        let stored = match &table {
            Some(t) => bronze::stored_offsets(&lake, t, &settings.group, &topic, parts.iter().map(|p| p.0)).await?,
            None => Default::default(),
        };
        for (partition, end_offset) in parts {
            let bronze_offset = stored.get(&partition).copied();
            let lag = end_offset - bronze_offset.map_or(0, |o| o + 1);
            partitions.push(PartitionStatus { topic: topic.clone(), partition, end_offset, bronze_offset, lag });
        }
    }
    let mut tables = Vec::new();
    for rel in crate::maintain::tables(settings) {
        tables.push(match lake.open(&rel).await? {
            Some(t) => TableStatus { table: rel, version: Some(version_of(&t)), rows: Some(read::count(&t).await?) },
            None => TableStatus { table: rel, version: None, rows: None },
        });
    }
    let mongodb = match &settings.mongodb_uri {
        Some(uri) => {
            let m = MongoSink::connect(uri, &settings.mongodb_database, &settings.group).await?;
            let mut topics = Vec::new();
            for topic in settings.topics() {
                let published = m.progress(&topic).await?;
                let floor = published.unwrap_or(-1);
                let (bronze_version, changed) =
                    match lake.open(&bronze::table_name(&settings.bronze_prefix, &topic)).await? {
                        // Compactions since the last publish hold nothing MongoDB lacks.
                        Some(t) => (version_of(&t) as i64, commits::last_changed(&t, floor).await?),
                        None => (-1, -1),
                    };
                let behind = (changed - floor).max(0);
                topics.push(PublishStatus { topic, bronze_version, published, behind });
            }
            m.close().await;
            Some(MongoStatus { database: settings.mongodb_database.clone(), topics })
        }
        None => None,
    };
    Ok(Status { lake: settings.lake.to_string(), group: settings.group.clone(), partitions, tables, mongodb })
}

pub fn render_text(s: &Status) -> String {
    let mut out = String::new();
    writeln!(out, "lake: {}", s.lake).ok();
    writeln!(out, "group: {}\n", s.group).ok();
    writeln!(out, "{:<28} {:>9} {:>12} {:>14} {:>10}", "topic/partition", "", "end offset", "bronze offset", "lag")
        .ok();
    for p in &s.partitions {
        let stored = p.bronze_offset.map_or("-".to_string(), |o| o.to_string());
        let tp = format!("{}/{}", p.topic, p.partition);
        writeln!(out, "{tp:<28} {:>9} {:>12} {stored:>14} {:>10}", "", p.end_offset, p.lag).ok();
    }
    writeln!(out, "\n{:<36} {:>8} {:>10}", "table", "version", "rows").ok();
    for t in &s.tables {
        match (t.version, t.rows) {
            (Some(v), Some(r)) => writeln!(out, "{:<36} {v:>8} {r:>10}", t.table).ok(),
            _ => writeln!(out, "{:<36} {:>8} {:>10}", t.table, "-", "(not created yet)").ok(),
        };
    }
    match &s.mongodb {
        Some(m) => {
            writeln!(out, "\nmongodb database '{}':", m.database).ok();
            for t in &m.topics {
                let p_txt = match t.published {
                    None => "none".to_string(),
                    Some(v) if t.behind > 0 => {
                        format!("{v} (behind by {} bronze versions: degraded or catching up)", t.behind)
                    }
                    Some(v) => v.to_string(),
                };
                writeln!(
                    out,
                    "  {}: bronze version {}, published up to bronze version {p_txt}",
                    t.topic, t.bronze_version
                )
                .ok();
            }
        }
        None => writeln!(out, "\nmongodb: publishing off (no --mongodb-uri)").ok().unwrap_or(()),
    }
    out
}

/// `status` output: text, or one JSON document with `--json`.
pub async fn report(settings: &Settings, json: bool) -> Result<String> {
    let s = gather(settings).await?;
    Ok(if json {
        let mut text = serde_json::to_string_pretty(&s).map_err(|e| crate::error::Error::Other(e.to_string()))?;
        text.push('\n');
        text
    } else {
        render_text(&s)
    })
}
