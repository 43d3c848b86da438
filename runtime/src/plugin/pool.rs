//! Plugin instances on their own threads, behind an async API. Wasm calls are synchronous and
//! CPU-bound, so they run on dedicated threads (one `Store` each) and never block the async
//! runtime; a bounded queue in front of each is the backpressure.
//!
//! Each input partition belongs to one instance (or, with `pipeline.order = "key"` or
//! `"none"`, each key: [`Route`]): a batch is split by instance, the shares run on their
//! instances at the same time, and the answers are put back in the batch's order. So one
//! instance sees every record of a partition (of a key), in order, and a completion reaches
//! the instance that prepared its record.

use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use super::instance::Instance;
use super::{LoadedPlugin, PluginError};
use crate::contract::{Completion, Decision, InputRecord, ModelRequirements, OutputRecord};
use crate::failure::Failure;

/// Records back from `prepare`, with one decision (or failure) per record, in order.
pub type Prepared = (Vec<InputRecord>, Vec<Result<Decision, Failure>>);
/// One result per completion, in order.
pub type Completed = Vec<Result<Vec<OutputRecord>, Failure>>;

enum Job {
    Prepare(
        Vec<InputRecord>,
        oneshot::Sender<Result<Prepared, PluginError>>,
    ),
    Complete(
        Vec<Completion>,
        oneshot::Sender<Result<Completed, PluginError>>,
    ),
}

/// Which instance a record goes to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Route {
    /// Each partition's records to one instance.
    #[default]
    ByPartition,
    /// Each key's records to one instance, by a hash stable across runs; records without a
    /// key by their partition.
    ByKey,
}

impl Route {
    /// How records are spread for `order`: a partition's order needs its records on one
    /// instance; a key's order, or none, lets a partition use them all.
    pub fn for_order(order: crate::config::Order) -> Self {
        match order {
            crate::config::Order::Partition => Self::ByPartition,
            crate::config::Order::Key | crate::config::Order::Unordered => Self::ByKey,
        }
    }

    /// The instance of `workers` that handles a record of `partition` with `key`.
    fn worker(self, partition: i32, key: Option<&[u8]>, workers: usize) -> usize {
        let spread = match (self, key) {
            (Self::ByKey, Some(key)) => crate::stable_hash::hash(&[key]),
            _ => u64::from(partition.unsigned_abs()),
        };
        (spread % workers as u64) as usize
    }
}

/// A fixed set of plugin instances, each on its own thread with its own queue.
pub struct PluginPool {
    queues: Vec<mpsc::Sender<Job>>,
    route: Route,
    digest: Arc<str>,
    requirements: ModelRequirements,
    path: std::path::PathBuf,
    stats: Arc<super::PluginStats>,
    threads: Vec<JoinHandle<()>>,
    /// How long one call may take: what shutting down waits for.
    call_timeout: std::time::Duration,
}

impl std::fmt::Debug for PluginPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginPool")
            .field("workers", &self.threads.len())
            .finish()
    }
}

impl PluginPool {
    /// Instantiates and configures `workers` instances, then starts their threads. Instances
    /// are built here, not on the threads, so that a plugin refusing its settings stops
    /// start-up with its message.
    ///
    /// # Errors
    /// [`PluginError::Instantiate`] or [`PluginError::Configure`].
    pub fn start(plugin: Arc<LoadedPlugin>, workers: usize) -> Result<Self, PluginError> {
        let instances = (0..workers.max(1))
            .map(|_| Instance::new(plugin.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let requirements = instances
            .first()
            .map(|first| first.declared().clone())
            .unwrap_or_default();
        let mut threads = Vec::with_capacity(instances.len());
        let mut queues = Vec::with_capacity(instances.len());
        for (n, instance) in instances.into_iter().enumerate() {
            let (jobs, queue) = mpsc::channel::<Job>(2);
            queues.push(jobs);
            let thread = std::thread::Builder::new()
                .name(format!("plugin-{n}"))
                .spawn(move || work(instance, queue))
                .map_err(|e| PluginError::Instantiate {
                    path: plugin.path.clone(),
                    message: format!("cannot start a worker thread: {e}"),
                })?;
            threads.push(thread);
        }
        Ok(Self {
            queues,
            route: Route::ByPartition,
            digest: plugin.digest().clone(),
            requirements,
            path: plugin.path.clone(),
            stats: plugin.stats.clone(),
            threads,
            call_timeout: plugin.call_timeout,
        })
    }

    /// Spreads records over the instances by `route` (by partition unless told).
    #[must_use]
    pub fn routed(mut self, route: Route) -> Self {
        self.route = route;
        self
    }

    /// How records are spread over the instances.
    pub fn route(&self) -> Route {
        self.route
    }

    /// `sha256:<hex>` of the component these instances run.
    pub fn digest(&self) -> &Arc<str> {
        &self.digest
    }

    /// What this plugin, and the ones it replaced, did.
    pub fn stats(&self) -> &Arc<super::PluginStats> {
        &self.stats
    }

    /// The plugin file these instances were compiled from.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// What the plugin declared it sends the model and reads back.
    pub fn requirements(&self) -> &ModelRequirements {
        &self.requirements
    }

    /// Asks the plugin what to do with each record.
    ///
    /// # Errors
    /// [`PluginError::Stopped`] when the workers are gone, or the error that stopped one (an
    /// instance that could not be rebuilt).
    pub async fn prepare(&self, records: Vec<InputRecord>) -> Result<Prepared, PluginError> {
        if self.queues.len() == 1 {
            return self.ask(0, |reply| Job::Prepare(records, reply)).await;
        }
        let route: Vec<usize> = records
            .iter()
            .map(|r| self.worker_of(r.partition, r.key.as_deref()))
            .collect();
        let shares = split(records, &route, self.queues.len());
        let answers = futures::future::try_join_all(
            shares
                .into_iter()
                .enumerate()
                .filter(|(_, share)| !share.is_empty())
                .map(|(w, share)| self.ask(w, |reply| Job::Prepare(share, reply))),
        )
        .await?;
        let (records, decisions): (Vec<_>, Vec<_>) = answers.into_iter().unzip();
        Ok((
            merge(records, &route, self.queues.len())?,
            merge(decisions, &route, self.queues.len())?,
        ))
    }

    /// Turns model responses into output records.
    ///
    /// # Errors
    /// As [`PluginPool::prepare`].
    pub async fn complete(&self, completions: Vec<Completion>) -> Result<Completed, PluginError> {
        if self.queues.len() == 1 {
            return self.ask(0, |reply| Job::Complete(completions, reply)).await;
        }
        let route: Vec<usize> = completions
            .iter()
            .map(|c| self.worker_of(c.origin.partition, c.origin.key.as_deref()))
            .collect();
        let shares = split(completions, &route, self.queues.len());
        let answers = futures::future::try_join_all(
            shares
                .into_iter()
                .enumerate()
                .filter(|(_, share)| !share.is_empty())
                .map(|(w, share)| self.ask(w, |reply| Job::Complete(share, reply))),
        )
        .await?;
        merge(answers, &route, self.queues.len())
    }

    /// The instance that handles a record of `partition` with `key`.
    fn worker_of(&self, partition: i32, key: Option<&[u8]>) -> usize {
        self.route.worker(partition, key, self.queues.len())
    }

    /// Sends one job to one instance and waits for its answer.
    async fn ask<T>(
        &self,
        worker: usize,
        job: impl FnOnce(oneshot::Sender<Result<T, PluginError>>) -> Job,
    ) -> Result<T, PluginError> {
        let (reply, answer) = oneshot::channel();
        self.queues[worker]
            .send(job(reply))
            .await
            .map_err(|_| PluginError::Stopped)?;
        answer.await.map_err(|_| PluginError::Stopped)?
    }

    /// Stops taking jobs and waits for the threads to finish the ones they hold, for as long
    /// as two calls may take (at least a second). A thread still busy after that (a batch
    /// retried record by record) is left to finish on its own: nothing waits for it.
    pub fn shutdown(self) {
        drop(self.queues);
        let until = std::time::Instant::now()
            + (self.call_timeout * 2).max(std::time::Duration::from_secs(1));
        let mut threads = self.threads;
        while !threads.iter().all(JoinHandle::is_finished) && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let (finished, busy): (Vec<_>, Vec<_>) =
            threads.drain(..).partition(JoinHandle::is_finished);
        for thread in finished {
            if thread.join().is_err() {
                tracing::error!("a plugin worker thread panicked");
            }
        }
        if !busy.is_empty() {
            tracing::warn!(
                workers = busy.len(),
                "plugin workers still busy at shutdown: not waited for"
            );
        }
    }
}

/// The items of each instance, in their order, by `route` (an instance per item).
fn split<T>(items: Vec<T>, route: &[usize], workers: usize) -> Vec<Vec<T>> {
    let mut shares: Vec<Vec<T>> = (0..workers).map(|_| Vec::new()).collect();
    for (item, &w) in items.into_iter().zip(route) {
        shares[w].push(item);
    }
    shares
}

/// The answers of the instances that had a share, back in the order of `route`. An
/// instance answers once per item (the contract guard checks), so nothing is missing.
fn merge<T>(answers: Vec<Vec<T>>, route: &[usize], workers: usize) -> Result<Vec<T>, PluginError> {
    let mut present = vec![false; workers];
    for &w in route {
        present[w] = true;
    }
    let mut answers = answers.into_iter();
    let mut by_worker: Vec<Option<std::vec::IntoIter<T>>> = present
        .iter()
        .map(|&had_share| {
            had_share
                .then(|| answers.next().map(Vec::into_iter))
                .flatten()
        })
        .collect();
    route
        .iter()
        .map(|&w| {
            by_worker[w]
                .as_mut()
                .and_then(Iterator::next)
                .ok_or(PluginError::Stopped)
        })
        .collect()
}

fn work(mut instance: Instance, mut queue: mpsc::Receiver<Job>) {
    loop {
        let Some(job) = queue.blocking_recv() else {
            return;
        };
        let healthy = match job {
            Job::Prepare(mut records, reply) => {
                let result = instance.prepare(&mut records).map(|r| (records, r));
                let healthy = result.is_ok();
                let _ = reply.send(result);
                healthy
            }
            Job::Complete(completions, reply) => {
                let result = instance.complete(&completions);
                let healthy = result.is_ok();
                let _ = reply.send(result);
                healthy
            }
        };
        if !healthy {
            // The instance could not be rebuilt; the error went to the caller, which stops.
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_keep_each_instances_order_and_the_merge_restores_the_batchs() {
        let route = [0, 1, 1, 0, 2, 0];
        let shares = split(vec!['a', 'b', 'c', 'd', 'e', 'f'], &route, 3);
        assert_eq!(shares, [vec!['a', 'd', 'f'], vec!['b', 'c'], vec!['e']]);
        let answers: Vec<Vec<String>> = shares
            .iter()
            .map(|share| share.iter().map(|c| c.to_uppercase().collect()).collect())
            .collect();
        let merged = merge(answers, &route, 3).expect("one answer per item");
        assert_eq!(merged, ["A", "B", "C", "D", "E", "F"]);
    }

    #[test]
    fn by_key_a_key_keeps_its_instance_and_a_partition_uses_them_all() {
        let workers = 4;
        let by_partition: std::collections::HashSet<usize> = (0..64)
            .map(|k: u32| Route::ByPartition.worker(3, Some(&k.to_be_bytes()), workers))
            .collect();
        assert_eq!(by_partition.len(), 1, "by partition, keys do not matter");
        let by_key: std::collections::HashSet<usize> = (0..64)
            .map(|k: u32| Route::ByKey.worker(3, Some(&k.to_be_bytes()), workers))
            .collect();
        assert_eq!(
            by_key.len(),
            workers,
            "one partition's keys spread over all"
        );
        for partition in 0..8 {
            assert_eq!(
                Route::ByKey.worker(partition, Some(b"card-7"), workers),
                Route::ByKey.worker(0, Some(b"card-7"), workers),
                "a key's instance depends on the key alone"
            );
            assert_eq!(
                Route::ByKey.worker(partition, None, workers),
                Route::ByPartition.worker(partition, None, workers),
                "no key: by partition"
            );
        }
    }

    #[test]
    fn an_instance_without_a_share_gives_no_answer_and_a_short_answer_is_an_error() {
        let route = [2, 2, 0];
        let answers = vec![vec![30], vec![10, 20]];
        assert_eq!(merge(answers, &route, 3).expect("complete"), [10, 20, 30]);
        let short = vec![vec![30], vec![10]];
        assert!(matches!(merge(short, &route, 3), Err(PluginError::Stopped)));
    }
}
