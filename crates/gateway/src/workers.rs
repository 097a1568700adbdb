//! Connection workers: one single-threaded runtime per core.
//!
//! A relayed statement crosses two sockets in each direction. On a
//! work-stealing runtime every readiness event could wake a second worker to
//! steal the task (a futex call and a context switch), which cost the
//! gateway about a fifth of its CPU per statement. Here a connection lives on
//! one thread for its whole life, its two sockets on that thread's epoll, and
//! new connections go to the worker with the fewest open ones.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

struct Worker {
    handle: Handle,
    open: Arc<AtomicUsize>,
}

/// The worker threads. Dropping the pool stops them (and whatever they still
/// run), so a [`crate::server::Running`] that is dropped leaves no thread
/// behind.
pub struct Workers {
    workers: Vec<Worker>,
    _stop: DropGuard,
}

/// Counts a connection against its worker while it is open.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Workers {
    /// Starts `count` workers (at least one).
    pub fn start(count: usize) -> std::io::Result<Self> {
        let stop = CancellationToken::new();
        let mut workers = Vec::new();
        for n in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("postern-worker-{n}"))
                .spawn(move || runtime.block_on(stop.cancelled()))?;
            workers.push(Worker {
                handle,
                open: Arc::default(),
            });
        }
        Ok(Workers {
            workers,
            _stop: stop.drop_guard(),
        })
    }

    /// Runs `serve` for an accepted connection on the least busy worker,
    /// tracked by `tracker`. The socket moves to that worker's reactor.
    pub fn spawn<F, Fut>(&self, tracker: &TaskTracker, tcp: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let worker = self
            .workers
            .iter()
            .min_by_key(|w| w.open.load(Relaxed))
            .expect("there is at least one worker");
        worker.open.fetch_add(1, Relaxed);
        let open = Open(worker.open.clone());
        let moved = tcp.into_std();
        tracker.spawn_on(
            async move {
                let _open = open;
                match moved.and_then(TcpStream::from_std) {
                    Ok(tcp) => serve(tcp).await,
                    Err(e) => tracing::warn!(error = %e, "connection could not move to a worker"),
                }
            },
            &worker.handle,
        );
    }
}
