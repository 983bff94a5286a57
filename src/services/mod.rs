//! The long-running services: the webhook [`ingress`], the [`worker`], the reply [`gate`] and the
//! operator [`console`]. Each starts as a [`Part`]: named tasks in layers, stopped front to back,
//! watched so that the first to end by itself stops the part (and `coexist` exits non-zero).

pub mod console;
pub mod gate;
pub mod ingress;
pub mod layout;
pub mod numbers;
pub mod worker;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::adapters::broker::{Link, Topology};
use crate::runtime::config::Config;
use crate::runtime::supervise::{Handle, Tasks};

/// `expr?` inside a service's start, once `part` holds tasks: on an error, the part is stopped
/// and waited for ([`Part::abandon`]) before the error is returned.
macro_rules! started {
    ($part:ident, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => {
                $part.abandon().await;
                return Err(e.into());
            }
        }
    };
}
pub(crate) use started;

/// A layer of a part's tasks that outlives the front (a broker link, an event publisher, a
/// marks writer): told to stop, through its own token, only after the front and every layer made
/// after it have stopped, so that what the front finishes still gets published and recorded.
pub struct Layer {
    index: usize,
    /// Cancelled when the layer is to stop.
    pub stop: CancellationToken,
}

/// A service being started: its front (servers and work, stopped by `shutdown`) and its layers.
/// Dropped before [`Part::supervise`] (a start that failed), it stops everything it started.
pub struct Part {
    name: &'static str,
    front: CancellationToken,
    tasks: Tasks,
    /// Task names of the front, in the order they are joined.
    front_tasks: Vec<&'static str>,
    /// Each layer's token and task names, in the order they were made.
    layers: Vec<(CancellationToken, Vec<&'static str>)>,
}

impl Part {
    /// A part named `name` (its supervisor's name in logs) that stops when `shutdown` is cancelled.
    pub fn new(name: &'static str, shutdown: &CancellationToken) -> Self {
        Part {
            name,
            front: shutdown.child_token(),
            tasks: Tasks::new(),
            front_tasks: Vec::new(),
            layers: Vec::new(),
        }
    }

    /// The front's stop token: cancelled on shutdown, or when a task ends by itself.
    pub fn stop(&self) -> &CancellationToken {
        &self.front
    }

    /// A new layer, stopped after the front and after every layer made later (what is made
    /// first, and others depend on, stops last).
    pub fn layer(&mut self) -> Layer {
        let stop = CancellationToken::new();
        self.layers.push((stop.clone(), Vec::new()));
        Layer {
            index: self.layers.len() - 1,
            stop,
        }
    }

    /// Watches a front task (joined in the order added when stopping).
    pub fn add(&mut self, name: &'static str, handle: JoinHandle<()>) {
        self.front_tasks.push(name);
        self.tasks.add(name, handle);
    }

    /// Spawns and watches a front task.
    pub fn spawn(
        &mut self,
        name: &'static str,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        self.add(name, tokio::spawn(task));
    }

    /// Watches a task of `layer`.
    pub fn add_to(&mut self, layer: &Layer, name: &'static str, handle: JoinHandle<()>) {
        self.layers[layer.index].1.push(name);
        self.tasks.add(name, handle);
    }

    /// The self-reconnecting broker link of a part, in a layer of its own: it closes only after
    /// everything the part stops before it (which may still publish or acknowledge).
    pub fn link(
        &mut self,
        config: &Config,
        connection: String,
        topology: &Topology,
    ) -> std::sync::Arc<Link> {
        self.link_with(config, connection, topology, None)
    }

    /// [`link`](Self::link), doing `on_connect` on each new connection before it is used.
    pub fn link_with(
        &mut self,
        config: &Config,
        connection: String,
        topology: &Topology,
        on_connect: Option<std::sync::Arc<dyn crate::adapters::broker::link::OnConnect>>,
    ) -> std::sync::Arc<Link> {
        let layer = self.layer();
        let (link, task) = Link::spawn(
            config.amqp_url.expose().to_owned(),
            connection,
            topology.clone(),
            on_connect,
            config.publish_gather,
            layer.stop.clone(),
        );
        self.add_to(&layer, "broker link", task);
        link
    }

    /// A start that failed: stops what the part started, in its order, and waits until it has
    /// (a broker link left closing while the process exits takes lapin's I/O thread down with a
    /// panic).
    pub async fn abandon(self) {
        self.supervise().stop().await;
    }

    /// Starts watching: the handle resolves once the part has stopped, front first, then the
    /// layers from the last made to the first.
    pub fn supervise(mut self) -> Handle {
        // A fresh token left behind: dropping what remains of the part cancels nothing.
        let front = std::mem::replace(&mut self.front, CancellationToken::new());
        let name = self.name;
        let mut tasks = std::mem::take(&mut self.tasks);
        let front_tasks = std::mem::take(&mut self.front_tasks);
        let layers = std::mem::take(&mut self.layers);
        let watched = front.clone();
        let done = tokio::spawn(async move {
            let result = tasks.watch(&watched).await;
            for task in front_tasks {
                tasks.join(task).await;
            }
            for (stop, names) in layers.into_iter().rev() {
                stop.cancel();
                for task in names {
                    tasks.join(task).await;
                }
            }
            tasks.join_all().await;
            result
        });
        Handle::new(name, done, front)
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        self.front.cancel();
        for (stop, _) in &self.layers {
            stop.cancel();
        }
    }
}
