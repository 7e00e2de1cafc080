//! `orderlake status`: where the pipeline stands — per partition the end offset, the offset stored
//! in bronze and the lag; every table's version and row count; MongoDB's published version.

use std::fmt::Write;

use rdkafka::consumer::BaseConsumer;

use crate::config::Settings;
use crate::error::Result;
use crate::lake::{Lake, bronze, read, version_of};
use crate::sink::mongo::MongoSink;
use crate::source::kafka;

pub async fn report(settings: &Settings) -> Result<String> {
    let lake = Lake::new(settings);
    let mut out = String::new();
    writeln!(out, "lake: {}", settings.lake).ok();
    writeln!(out, "group: {}\n", settings.group).ok();
    writeln!(out, "{:<28} {:>9} {:>12} {:>14} {:>10}", "topic/partition", "", "end offset", "bronze offset", "lag")
        .ok();
    let consumer: BaseConsumer = kafka::base_config(settings).create()?;
    for topic in settings.topics() {
        let ends = kafka::end_offsets(&consumer, settings, &topic)?;
        let table = lake.open(&bronze::table_name(&settings.bronze_prefix, &topic)).await?;
        let mut parts: Vec<_> = ends.into_iter().collect();
        parts.sort();
        let stored = match &table {
            Some(t) => bronze::stored_offsets(t, &settings.group, &topic, parts.iter().map(|p| p.0)).await?,
            None => Default::default(),
        };
        for (p, end) in parts {
            let s = stored.get(&p).copied();
            let lag = end - s.map_or(0, |o| o + 1);
            let s_txt = s.map_or("-".to_string(), |o| o.to_string());
            writeln!(out, "{:<28} {:>9} {:>12} {:>14} {:>10}", format!("{topic}/{p}"), "", end, s_txt, lag).ok();
        }
    }
    writeln!(out, "\n{:<36} {:>8} {:>10}", "table", "version", "rows").ok();
    for rel in crate::maintain::tables(settings) {
        match lake.open(&rel).await? {
            Some(t) => writeln!(out, "{:<36} {:>8} {:>10}", rel, version_of(&t), read::count(&t).await?).ok(),
            None => writeln!(out, "{:<36} {:>8} {:>10}", rel, "-", "(not created yet)").ok(),
        };
    }
    match &settings.mongodb_uri {
        Some(uri) => {
            let m = MongoSink::connect(uri, &settings.mongodb_database, &settings.group).await?;
            writeln!(out, "\nmongodb database '{}':", settings.mongodb_database).ok();
            for topic in settings.topics() {
                let bronze_v = match lake.open(&bronze::table_name(&settings.bronze_prefix, &topic)).await? {
                    Some(t) => version_of(&t) as i64,
                    None => -1,
                };
                let published = m.progress(&topic).await?;
                let p_txt = match published {
                    None => "none".to_string(),
                    Some(v) if v < bronze_v => {
                        format!("{v} (behind by {} bronze versions: degraded or catching up)", bronze_v - v)
                    }
                    Some(v) => v.to_string(),
                };
                writeln!(out, "  {topic}: bronze version {bronze_v}, published up to bronze version {p_txt}").ok();
            }
        }
        None => writeln!(out, "\nmongodb: publishing off (no --mongodb-uri)").ok().unwrap_or(()),
    }
    Ok(out)
}
