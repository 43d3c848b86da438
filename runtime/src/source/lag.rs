//! Per-partition position and lag, from librdkafka's statistics (emitted every
//! `statistics.interval.ms`): the offset last committed and how far it is behind the partition's
//! end (the last stable offset for a `read_committed` reader, else the high watermark). Only
//! partitions this member fetches are kept; the brokers are never asked at scrape time.
//!
//! In exactly-once mode the offsets are committed by the producer's transactions, which
//! librdkafka's consumer statistics do not see: the source puts its own committed positions in
//! (see [`super::Source::lags`]).

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Deserialize;

/// One assigned partition as the last statistics saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset; -1 when nothing is committed yet.
    pub committed: i64,
    /// The partition's end as a reader sees it; -1 when unknown.
    pub end: i64,
}

impl PartitionLag {
    /// Records between the committed offset and the end; -1 when either is unknown. Never
    /// below zero: statistics taken at different moments can put the end behind a commit.
    pub fn lag(&self) -> i64 {
        if self.committed < 0 || self.end < 0 {
            -1
        } else {
            (self.end - self.committed).max(0)
        }
    }
}

/// The latest statistics, replaced whole at each emission.
#[derive(Debug, Default)]
pub(crate) struct Lags(Mutex<Vec<PartitionLag>>);

#[derive(Deserialize)]
struct Statistics {
    #[serde(default)]
    topics: HashMap<String, Topic>,
}

#[derive(Deserialize)]
struct Topic {
    #[serde(default)]
    partitions: HashMap<String, Partition>,
}

#[derive(Deserialize)]
struct Partition {
    partition: i32,
    #[serde(default)]
    fetch_state: String,
    #[serde(default = "unknown")]
    committed_offset: i64,
    #[serde(default = "unknown")]
    hi_offset: i64,
    #[serde(default = "unknown")]
    ls_offset: i64,
}

fn unknown() -> i64 {
    -1
}

impl Lags {
    /// Takes one emission of librdkafka's statistics (JSON); a document that cannot be read
    /// leaves the last one in place.
    pub(crate) fn update(&self, json: &[u8]) {
        let stats: Statistics = match serde_json::from_slice(json) {
            Ok(s) => s,
            Err(error) => {
                tracing::debug!(%error, "cannot read librdkafka's statistics");
                return;
            }
        };
        let mut lags: Vec<PartitionLag> = stats
            .topics
            .into_iter()
            .flat_map(|(topic, t)| {
                t.partitions
                    .into_values()
                    // -1 is librdkafka's internal partition for records not yet partitioned;
                    // `none` is a partition the consumer knows of but does not fetch.
                    .filter(|p| p.partition >= 0 && p.fetch_state != "none")
                    .map(move |p| PartitionLag {
                        topic: topic.clone(),
                        partition: p.partition,
                        // librdkafka says "none" with -1001 (an invalid offset).
                        committed: p.committed_offset.max(-1),
                        end: if p.ls_offset >= 0 {
                            p.ls_offset
                        } else {
                            p.hi_offset.max(-1)
                        },
                    })
            })
            .collect();
        lags.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = lags;
    }

    pub(crate) fn current(&self) -> Vec<PartitionLag> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assigned_partitions_are_read_from_the_statistics() {
        let json = br#"{"name":"c","topics":{"in":{"topic":"in","partitions":{
            "0":{"partition":0,"fetch_state":"active","committed_offset":40,"hi_offset":45,"ls_offset":42},
            "2":{"partition":2,"fetch_state":"active","committed_offset":-1001,"hi_offset":7,"ls_offset":-1},
            "1":{"partition":1,"fetch_state":"none","committed_offset":-1001,"hi_offset":-1},
            "-1":{"partition":-1,"fetch_state":"none","committed_offset":-1,"hi_offset":-1}}}}}"#;
        let lags = Lags::default();
        lags.update(json);
        let current = lags.current();
        assert_eq!(
            current,
            [
                PartitionLag {
                    topic: "in".into(),
                    partition: 0,
                    committed: 40,
                    end: 42
                },
                PartitionLag {
                    topic: "in".into(),
                    partition: 2,
                    committed: -1,
                    end: 7
                }
            ]
        );
        assert_eq!(current[0].lag(), 2, "to the last stable offset");
        assert_eq!(current[1].lag(), -1, "nothing committed: unknown");
        lags.update(b"not json");
        assert_eq!(lags.current().len(), 2, "a bad document keeps the last one");
    }
}
