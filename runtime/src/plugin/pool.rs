//! Plugin instances on their own threads, behind an async API. Wasm calls are synchronous and
//! CPU-bound, so they run on dedicated threads (one `Store` each) and never block the async
//! runtime; a bounded queue in front of them is the backpressure.

use std::sync::{Arc, Mutex};
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

/// A fixed set of plugin instances, each on its own thread.
pub struct PluginPool {
    jobs: mpsc::Sender<Job>,
    digest: Arc<str>,
    requirements: ModelRequirements,
    path: std::path::PathBuf,
    stats: Arc<super::PluginStats>,
    threads: Vec<JoinHandle<()>>,
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
        let (jobs, queue) = mpsc::channel::<Job>(workers.max(1) * 2);
        let queue = Arc::new(Mutex::new(queue));
        let mut threads = Vec::with_capacity(instances.len());
        for (n, instance) in instances.into_iter().enumerate() {
            let queue = queue.clone();
            let thread = std::thread::Builder::new()
                .name(format!("plugin-{n}"))
                .spawn(move || work(instance, &queue))
                .map_err(|e| PluginError::Instantiate {
                    path: plugin.path.clone(),
                    message: format!("cannot start a worker thread: {e}"),
                })?;
            threads.push(thread);
        }
        Ok(Self {
            jobs,
            digest: plugin.digest().clone(),
            requirements,
            path: plugin.path.clone(),
            stats: plugin.stats.clone(),
            threads,
        })
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
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Prepare(records, reply))
            .await
            .map_err(|_| PluginError::Stopped)?;
        answer.await.map_err(|_| PluginError::Stopped)?
    }

    /// Turns model responses into output records.
    ///
    /// # Errors
    /// As [`PluginPool::prepare`].
    pub async fn complete(&self, completions: Vec<Completion>) -> Result<Completed, PluginError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Complete(completions, reply))
            .await
            .map_err(|_| PluginError::Stopped)?;
        answer.await.map_err(|_| PluginError::Stopped)?
    }

    /// Stops taking jobs and waits for the threads to finish the ones they hold.
    pub fn shutdown(self) {
        drop(self.jobs);
        for thread in self.threads {
            if thread.join().is_err() {
                tracing::error!("a plugin worker thread panicked");
            }
        }
    }
}

fn work(mut instance: Instance, queue: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        // Whoever holds the lock waits for the next job; the others wait for the lock.
        let job = match queue.lock() {
            Ok(mut rx) => rx.blocking_recv(),
            Err(_) => None,
        };
        let Some(job) = job else { return };
        let healthy = match job {
            Job::Prepare(records, reply) => {
                let result = instance.prepare(&records).map(|r| (records, r));
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
