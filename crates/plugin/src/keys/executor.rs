//! The one executor for private-key work (RSA signing and decryption), on every path: the
//! proxy's seal and open, and the notification listener's open.
//!
//! - At most `workers` operations run at once, on the executor's own `workers` threads
//!   (started with it: none is created on a request's path) at nice +10, so that cheap
//!   requests get a core before bulk RSA does.
//! - A free worker goes first to work after sending (opening an answer the platform may have
//!   acted on), then to new calls and notifications in the order they came ([`Slots`]):
//!   calls already under way finish before new ones start, so under saturation little work is
//!   left half done and nothing sent waits behind requests not yet sealed. (Notifications are
//!   not put behind new calls: under a sustained flood of calls they would never be opened.)
//! - At most `queue` more wait for a worker; beyond that the caller is refused at once
//!   ([`ExecError::Overloaded`]): the proxy answers 503 `not-sent`, the notification listener
//!   503 (the platform retries). Nothing unauthenticated can queue unbounded work.
//! - A panicking operation is reported as [`ExecError::Panicked`], never as a result.
//! - **The bounds are of CPU, not of futures.** An operation's admission and worker slot go
//!   with the job to its worker thread and are given back when the work ends, not when the
//!   caller's future is dropped: a caller that hangs up frees nothing that is still computing.
//!   A job whose caller has gone before a worker starts it is skipped
//!   (`paysign_private_key_jobs_total{outcome="skipped"}`): no signature for nobody. (Before,
//!   callers that hung up freed their slots at once while their jobs queued on: both cores
//!   stayed busy 5.3 s after the attackers left, computing ~3,900 signatures for no one.)
//!
//! - Work that anyone can cause (a notification before it verifies) is admitted for at most
//!   half the workers plus an eighth of the queue ([`PrivateKeyExecutor::run_unauthenticated`]),
//!   and runs on the executor's own threads in the `SCHED_IDLE` class: a forged flood gets what the cores
//!   leave over, ordinary calls keep theirs.
//!
//! It lives as long as the process (reloads keep it), so the bound holds across reloads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::metrics::ExecutorMetrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    #[error("private-key work is saturated")]
    Overloaded,
    #[error("a private-key operation panicked")]
    Panicked,
}

pub struct PrivateKeyExecutor {
    workers: usize,
    queue: usize,
    offload: bool,
    /// Unauthenticated work (notifications, before they verify) may hold at most this many
    /// admissions, so that a forged flood can take at most half the workers.
    unauthenticated_limit: usize,
    /// Shared with the jobs on the worker threads, which give back what they hold.
    state: Arc<State>,
    /// The threads (`workers`, nice +10) that run callers' work.
    ordinary: Threads,
    /// The threads (half the workers, `SCHED_IDLE`) that run unauthenticated work.
    lowest: Threads,
}

struct State {
    slots: Slots,
    /// Admitted: running or waiting for a worker.
    admitted: AtomicUsize,
    unauthenticated: AtomicUsize,
    /// At most half the workers run unauthenticated work at once.
    unauthenticated_running: tokio::sync::Semaphore,
    running: AtomicUsize,
    metrics: ExecutorMetrics,
}

/// Releases an admission slot however the operation ends (the job's end, or the caller going
/// away before it had a worker).
struct Admitted(Arc<State>);
impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.admitted.dec();
    }
}

/// What an unauthenticated operation holds besides its admission: its place in the class and
/// one of the half of the workers it may use.
struct Unauthenticated(Arc<State>);
impl Drop for Unauthenticated {
    fn drop(&mut self) {
        self.0.unauthenticated.fetch_sub(1, Ordering::AcqRel);
    }
}
struct HalfPermit(Arc<State>);
impl Drop for HalfPermit {
    fn drop(&mut self) {
        self.0.unauthenticated_running.add_permits(1);
    }
}

/// What a job holds while it waits and runs, and the metrics it is counted in (reached through
/// it: no clone per job).
trait Holds: Send + 'static {
    fn metrics(&self) -> Option<&ExecutorMetrics>;
}

impl Holds for Held {
    fn metrics(&self) -> Option<&ExecutorMetrics> {
        Some(&self._running.0.metrics)
    }
}

/// Everything an operation holds while it waits for and runs on a worker: it travels with the
/// job, so it is given back when the work ends (or is skipped), never earlier.
/// Fields drop in order: the worker slot last, so that when the next job can start, this one
/// no longer counts as running or admitted (a caller served next never sees it still there).
struct Held {
    _running: Running,
    _admitted: Admitted,
    _class: Option<(HalfPermit, Unauthenticated)>,
    _slot: Slot,
}

impl PrivateKeyExecutor {
    /// `offload: false` runs callers' work inline on the calling event loop (still bounded);
    /// unauthenticated work always runs on the lowest-priority threads.
    /// `metrics`: the instance's ([`crate::metrics::Metrics::executor`]).
    pub fn new(workers: usize, queue: usize, offload: bool, metrics: ExecutorMetrics) -> Self {
        let workers = workers.max(1);
        PrivateKeyExecutor {
            workers,
            queue,
            offload,
            unauthenticated_limit: (workers / 2).max(1) + queue / 8,
            state: Arc::new(State {
                slots: Slots::new(workers),
                admitted: AtomicUsize::new(0),
                unauthenticated: AtomicUsize::new(0),
                unauthenticated_running: tokio::sync::Semaphore::new((workers / 2).max(1)),
                running: AtomicUsize::new(0),
                metrics,
            }),
            ordinary: Threads::start(if offload { workers } else { 0 }, "paysign-pk", to_worker_scheduling),
            lowest: Threads::start((workers / 2).max(1), "paysign-unauth", to_idle_scheduling),
        }
    }

    /// [`Self::run`] for work that anyone on the network can cause (opening a notification
    /// before it is verified): besides the common bound, at most half the workers (plus an
    /// eighth of the queue) are ever admitted for it, so ordinary calls keep a core.
    pub async fn run_unauthenticated<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, ExecError> {
        if self.state.unauthenticated.fetch_add(1, Ordering::AcqRel) >= self.unauthenticated_limit {
            self.state.unauthenticated.fetch_sub(1, Ordering::AcqRel);
            self.state.metrics.shed.inc();
            return Err(ExecError::Overloaded);
        }
        let class = Unauthenticated(self.state.clone());
        // The permit is given back by `HalfPermit` (it travels with the job, which a borrowed
        // permit could not).
        self.state.unauthenticated_running.acquire().await.map_err(|_| ExecError::Overloaded)?.forget();
        let half = HalfPermit(self.state.clone());
        let admitted = self.admit()?;
        self.run_on_worker(Priority::Unauthenticated, admitted, Some((half, class)), f).await
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    pub fn queue(&self) -> usize {
        self.queue
    }

    /// Runs `f` on a worker, or refuses at once when `workers + queue` are already admitted.
    /// For work before anything is sent.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, ExecError> {
        let admitted = self.admit()?;
        self.run_on_worker(Priority::BeforeSending, admitted, None, f).await
    }

    /// Takes an admission slot, or refuses at once when `workers + queue` are taken.
    fn admit(&self) -> Result<Admitted, ExecError> {
        if self.state.admitted.fetch_add(1, Ordering::AcqRel) >= self.workers + self.queue {
            self.state.admitted.fetch_sub(1, Ordering::AcqRel);
            self.state.metrics.shed.inc();
            return Err(ExecError::Overloaded);
        }
        self.state.metrics.admitted.inc();
        Ok(Admitted(self.state.clone()))
    }

    /// Runs `f` on a worker, waiting however long the queue is: for work after a request was
    /// sent (opening the platform's answer), which must never be shed. Its callers were
    /// admitted before sending, so this wait is bounded too.
    pub async fn run_committed<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, ExecError> {
        self.state.admitted.fetch_add(1, Ordering::AcqRel);
        self.state.metrics.admitted.inc();
        let admitted = Admitted(self.state.clone());
        self.run_on_worker(Priority::AfterSending, admitted, None, f).await
    }

    async fn run_on_worker<T: Send + 'static>(
        &self,
        priority: Priority,
        admitted: Admitted,
        class: Option<(HalfPermit, Unauthenticated)>,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ExecError> {
        let slot = Slots::acquire(&self.state, priority).await;
        let now = self.state.running.fetch_add(1, Ordering::AcqRel) + 1;
        let held = Held { _running: Running(self.state.clone()), _slot: slot, _admitted: admitted, _class: class };
        let max = &self.state.metrics.running_max;
        max.set(max.get().max(now as i64));
        if priority == Priority::Unauthenticated {
            self.lowest.run(f, held).await
        } else if self.offload {
            self.ordinary.run(f, held).await
        } else {
            // Inline: the caller's future cannot be dropped while this runs.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|_| ExecError::Panicked);
            self.state.metrics.executed.inc();
            drop(held);
            result
        }
    }
}

/// What a worker is asked for. Callers' work runs on the worker threads at nice +10;
/// unauthenticated work on the executor's own `SCHED_IDLE` threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Priority {
    /// Opening an answer: the platform may have acted; finishing it completes a call.
    AfterSending,
    /// Sealing a new call: nothing is sent yet.
    BeforeSending,
    /// Work anyone can cause (a notification before it verifies).
    Unauthenticated,
}

impl Priority {
    /// The queue a waiter joins; lower goes first. Work after sending first (there is at most
    /// one per admitted call, so it cannot starve the rest); new calls and notifications
    /// share the next, first come, first served.
    fn queue(self) -> usize {
        match self {
            Priority::AfterSending => 0,
            Priority::BeforeSending | Priority::Unauthenticated => 1,
        }
    }
}

/// The workers' slots, handed out by [`Priority::queue`] and first come, first served within one.
/// (tokio's `Semaphore` is first come, first served only: under saturation a call's answer
/// waited behind every newer call's sealing, and the calls in flight at any moment each held
/// work half done.)
struct Slots {
    state: std::sync::Mutex<SlotState>,
}

struct SlotState {
    free: usize,
    /// Waiters by priority; there are waiters only while no slot is free.
    waiting: [std::collections::VecDeque<tokio::sync::oneshot::Sender<()>>; 2],
}

/// A worker slot, given back (to the next waiter by priority) when dropped.
struct Slot(Arc<State>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.slots.release();
    }
}

impl Slots {
    fn new(workers: usize) -> Self {
        Slots { state: std::sync::Mutex::new(SlotState { free: workers, waiting: Default::default() }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        // The state is a counter and queues, consistent between statements: a panic elsewhere
        // while it was held leaves nothing half done.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn acquire(state: &Arc<State>, priority: Priority) -> Slot {
        let this = &state.slots;
        loop {
            let granted = {
                let mut s = this.lock();
                if s.free > 0 {
                    s.free -= 1;
                    return Slot(state.clone());
                }
                let (tx, rx) = tokio::sync::oneshot::channel();
                s.waiting[priority.queue()].push_back(tx);
                rx
            };
            let mut waiter = Waiter { granted, slots: this, settled: false };
            let handed_over = (&mut waiter.granted).await.is_ok();
            // From here the slot (if handed over) is this caller's, held by the `Slot`.
            waiter.settled = true;
            if handed_over {
                return Slot(state.clone());
            }
            // A sender is only dropped unsent when its receiver had gone: not this one. Should
            // it happen anyway, queue again rather than run without a slot.
        }
    }

    /// Hands the slot to the first waiter still waiting, by priority; else it becomes free.
    fn release(&self) {
        let mut s = self.lock();
        for queue in s.waiting.iter_mut() {
            while let Some(waiter) = queue.pop_front() {
                if waiter.send(()).is_ok() {
                    return;
                }
            }
        }
        s.free += 1;
    }

    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.lock().waiting.iter().map(|q| q.len()).sum()
    }
}

/// A caller waiting for a slot; if it goes away after a slot was handed to it, the slot goes
/// on to the next waiter instead of being lost.
struct Waiter<'a> {
    granted: tokio::sync::oneshot::Receiver<()>,
    slots: &'a Slots,
    /// The wait ended (the caller owns whatever it got): nothing to give back on drop.
    settled: bool,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.granted.close();
            if self.granted.try_recv().is_ok() {
                self.slots.release();
            }
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads, started with the executor (no thread is created on a request's
/// path) and ended when it is dropped. Admission and the slots bound the work before a job
/// gets here, so the channel never grows past them.
struct Threads {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Threads {
    fn start(threads: usize, name: &str, setup: fn()) -> Self {
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("{name}-{i}")).spawn(move || {
                setup();
                loop {
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            });
            if spawned.is_err() {
                tracing::error!("could not start a thread for private-key work ({name})");
            }
        }
        Threads { jobs }
    }

    /// Runs `f` on one of the threads; `held` (its admission and slot) is dropped when the
    /// work ends, or when the job is skipped because its caller has gone.
    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static, held: impl Holds) -> Result<T, ExecError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            if tx.is_closed() {
                if let Some(m) = held.metrics() {
                    m.skipped.inc();
                }
                return drop(held);
            }
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            if let Some(m) = held.metrics() {
                m.executed.inc();
            }
            // Given back before the caller hears of the result, so its next call finds the
            // slot free.
            drop(held);
            let _ = tx.send(result);
        });
        self.jobs.send(job).map_err(|_| ExecError::Overloaded)?;
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(ExecError::Panicked),
            Err(_) => Err(ExecError::Overloaded),
        }
    }
}

/// Puts the calling thread in the `SCHED_IDLE` class: it runs only on what the other threads
/// leave of a core, and any ordinary thread that wakes up preempts it at once (nice +19 alone
/// would still give it time slices of several milliseconds in front of the event loops). Where
/// the policy cannot be set (e.g. a seccomp filter), nice +19 is the fallback.
fn to_idle_scheduling() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler on the calling thread (pid 0) with a valid, initialised
    // sched_param that outlives the call; setpriority likewise takes plain integers.
    unsafe {
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            let _ = libc::setpriority(libc::PRIO_PROCESS, 0, 19);
        }
    }
}

/// Counts a running operation until it ends, however it ends.
struct Running(Arc<State>);
impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}

thread_local! {
    static LOWERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The callers' workers: nice +10, so that on a busy machine the event loops win the CPU over
/// bulk RSA work.
fn to_worker_scheduling() {
    lower_thread_priority_once(10);
}

/// Sets the calling thread's nice value, once per thread (the first call wins). Used for the
/// private-key workers (+10) and the internet-facing notification listener's thread (+5): the
/// callers' requests win the CPU over anything a stranger can send.
pub fn lower_thread_priority_once(nice: i32) {
    LOWERED.with(|done| {
        if !done.replace(true) {
            // SAFETY: setpriority on the calling thread (who = 0) with a plain integer; no
            // memory is passed. Failure (e.g. a seccomp policy) only leaves the priority as is.
            let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh instance's executor metrics.
    fn metrics() -> ExecutorMetrics {
        crate::metrics::Metrics::new(&prometheus::Registry::new()).unwrap().executor()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn beyond_workers_and_queue_callers_are_refused_at_once() {
        let ex = Arc::new(PrivateKeyExecutor::new(2, 3, true, metrics()));
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(std::sync::Mutex::new(gate));
        let mut held = Vec::new();
        for _ in 0..5 {
            let (ex, gate) = (ex.clone(), gate.clone());
            held.push(tokio::spawn(async move {
                ex.run(move || {
                    let _ = gate.lock().unwrap().recv();
                })
                .await
            }));
        }
        // Wait until all five are admitted (2 running, 3 queued).
        while ex.state.admitted.load(Ordering::Acquire) < 5 {
            tokio::task::yield_now().await;
        }
        assert_eq!(ex.run(|| 1).await, Err(ExecError::Overloaded));
        // Work after sending is never refused: it waits for a worker.
        let committed = {
            let ex = ex.clone();
            tokio::spawn(async move { ex.run_committed(|| 2).await })
        };
        for _ in 0..5 {
            release.send(()).unwrap();
        }
        for h in held {
            assert_eq!(h.await.unwrap(), Ok(()));
        }
        assert_eq!(committed.await.unwrap(), Ok(2));
        assert_eq!(ex.state.admitted.load(Ordering::Acquire), 0);
        assert_eq!(ex.run(|| 7).await, Ok(7));
        assert!(ex.state.running.load(Ordering::Acquire) == 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unauthenticated_work_gets_at_most_half_the_workers() {
        let ex = Arc::new(PrivateKeyExecutor::new(4, 16, true, metrics())); // 2 running + 2 waiting
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(std::sync::Mutex::new(gate));
        let held: Vec<_> = (0..4)
            .map(|_| {
                let (ex, gate) = (ex.clone(), gate.clone());
                tokio::spawn(async move {
                    ex.run_unauthenticated(move || {
                        let _ = gate.lock().unwrap().recv();
                    })
                    .await
                })
            })
            .collect();
        while ex.state.unauthenticated.load(Ordering::Acquire) < 4 {
            tokio::task::yield_now().await;
        }
        assert_eq!(ex.run_unauthenticated(|| 1).await, Err(ExecError::Overloaded));
        // Ordinary work still gets a worker.
        assert_eq!(ex.run(|| 2).await, Ok(2));
        for _ in 0..4 {
            release.send(()).unwrap();
        }
        for h in held {
            assert_eq!(h.await.unwrap(), Ok(()));
        }
        assert_eq!(ex.run_unauthenticated(|| 3).await, Ok(3));
    }

    /// Occupies the executor's only worker until the returned sender is used.
    async fn occupy(ex: &Arc<PrivateKeyExecutor>) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<Result<(), ExecError>>) {
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let ex2 = ex.clone();
        // Set by the work itself: the job is on its worker, not only sent to the threads (a
        // job its caller leaves before a worker took it is skipped, not run).
        let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let on_worker = started.clone();
        let held = tokio::spawn(async move {
            ex2.run(move || {
                on_worker.store(true, Ordering::Release);
                let _ = gate.recv();
            })
            .await
        });
        while !started.load(Ordering::Acquire) {
            tokio::task::yield_now().await;
        }
        (release, held)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_already_sent_for_go_first_then_calls_and_notifications_as_they_came() {
        let ex = Arc::new(PrivateKeyExecutor::new(1, 8, true, metrics()));
        let (release, held) = occupy(&ex).await;
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        // A notification and a new call queue first, then an answer.
        for (i, priority) in [(1, Priority::Unauthenticated), (2, Priority::BeforeSending), (3, Priority::AfterSending)] {
            let (ex2, order) = (ex.clone(), order.clone());
            waiting.push(tokio::spawn(async move {
                let work = move || order.lock().unwrap().push(i);
                match priority {
                    Priority::AfterSending => ex2.run_committed(work).await,
                    Priority::BeforeSending => ex2.run(work).await,
                    Priority::Unauthenticated => ex2.run_unauthenticated(work).await,
                }
            }));
            while ex.state.slots.waiting() < i {
                tokio::task::yield_now().await;
            }
        }
        release.send(()).unwrap();
        assert_eq!(held.await.unwrap(), Ok(()));
        for w in waiting {
            assert_eq!(w.await.unwrap(), Ok(()));
        }
        assert_eq!(*order.lock().unwrap(), vec![3, 1, 2]);
        assert_eq!(ex.state.admitted.load(Ordering::Acquire), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_that_gives_up_while_waiting_loses_no_worker() {
        let ex = Arc::new(PrivateKeyExecutor::new(1, 8, true, metrics()));
        let (release, held) = occupy(&ex).await;
        let ran = Arc::new(AtomicUsize::new(0));
        let gone = {
            let (ex2, ran) = (ex.clone(), ran.clone());
            tokio::spawn(async move { ex2.run(move || ran.fetch_add(1, Ordering::AcqRel)).await })
        };
        while ex.state.slots.waiting() < 1 {
            tokio::task::yield_now().await;
        }
        gone.abort();
        assert!(gone.await.unwrap_err().is_cancelled());
        release.send(()).unwrap();
        assert_eq!(held.await.unwrap(), Ok(()));
        // The slot went back: the work of the caller that left never ran, and the one worker
        // serves the next caller (twice, so a lost slot would hang here).
        assert_eq!(ex.run(|| 5).await, Ok(5));
        assert_eq!(ex.run_committed(|| 6).await, Ok(6));
        assert_eq!(ran.load(Ordering::Acquire), 0);
        assert_eq!(ex.state.slots.lock().free, 1);
        assert_eq!(ex.state.admitted.load(Ordering::Acquire), 0);
    }

    /// Issue 26, point 5: a caller that hangs up frees nothing that is still computing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_that_leaves_while_its_work_runs_keeps_the_worker_until_it_ends() {
        let ex = Arc::new(PrivateKeyExecutor::new(1, 8, true, metrics()));
        let (release, held) = occupy(&ex).await;
        held.abort();
        assert!(held.await.unwrap_err().is_cancelled());
        // The work still runs: its worker, admission and running count are still taken.
        assert_eq!(ex.state.slots.lock().free, 0);
        assert_eq!(ex.state.admitted.load(Ordering::Acquire), 1);
        assert_eq!(ex.state.running.load(Ordering::Acquire), 1);
        release.send(()).unwrap();
        // Given back when it ends: the next caller gets the worker.
        assert_eq!(ex.run(|| 5).await, Ok(5));
        assert_eq!(ex.state.slots.lock().free, 1);
        assert_eq!(ex.state.admitted.load(Ordering::Acquire), 0);
        assert_eq!(ex.state.running.load(Ordering::Acquire), 0);
    }

    /// Drops set a flag: stands for what a job holds.
    struct Flag(Arc<std::sync::atomic::AtomicBool>);
    impl Holds for Flag {
        fn metrics(&self) -> Option<&ExecutorMetrics> {
            None
        }
    }
    impl Holds for () {
        fn metrics(&self) -> Option<&ExecutorMetrics> {
            None
        }
    }
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_whose_caller_left_before_a_thread_took_it_is_skipped() {
        let threads = Arc::new(Threads::start(1, "test-skip", || {}));
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let (started, is_started) = std::sync::mpsc::channel::<()>();
        let busy = {
            let threads = threads.clone();
            tokio::spawn(async move {
                threads
                    .run(
                        move || {
                            started.send(()).unwrap();
                            gate.recv().unwrap()
                        },
                        (),
                    )
                    .await
            })
        };
        is_started.recv().unwrap();
        // Queued behind the busy thread, then its caller goes (polled once: the job is sent).
        let ran = Arc::new(AtomicUsize::new(0));
        let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let gone = {
            let ran = ran.clone();
            threads.run(move || ran.fetch_add(1, Ordering::AcqRel), Flag(released.clone()))
        };
        assert!(tokio::time::timeout(std::time::Duration::ZERO, gone).await.is_err());
        assert!(!released.load(Ordering::Acquire));
        release.send(()).unwrap();
        assert_eq!(busy.await.unwrap(), Ok(()));
        // The thread took the job, saw nobody waiting for it, and gave back what it held.
        while !released.load(Ordering::Acquire) {
            tokio::task::yield_now().await;
        }
        assert_eq!(threads.run(|| 9, ()).await, Ok(9));
        assert_eq!(ran.load(Ordering::Acquire), 0);
    }

    #[test]
    fn a_slot_handed_to_a_caller_that_has_gone_goes_to_the_next() {
        let slots = Slots::new(0);
        let (tx, rx) = tokio::sync::oneshot::channel();
        slots.lock().waiting[Priority::BeforeSending.queue()].push_back(tx);
        // Release hands the slot over, then the caller goes away before it looked.
        slots.release();
        drop(Waiter { granted: rx, slots: &slots, settled: false });
        assert_eq!(slots.lock().free, 1);
    }

    #[tokio::test]
    async fn a_panic_is_an_error_not_a_result() {
        for offload in [true, false] {
            let ex = PrivateKeyExecutor::new(1, 0, offload, metrics());
            let r: Result<u8, _> = ex.run(|| panic!("boom")).await;
            assert_eq!(r, Err(ExecError::Panicked));
            assert_eq!(ex.run(|| 3u8).await, Ok(3));
        }
        let ex = PrivateKeyExecutor::new(2, 0, true, metrics());
        let r: Result<u8, _> = ex.run_unauthenticated(|| panic!("boom")).await;
        assert_eq!(r, Err(ExecError::Panicked));
        assert_eq!(ex.run_unauthenticated(|| 4u8).await, Ok(4));
    }

    #[tokio::test]
    async fn unauthenticated_work_runs_on_the_lowest_priority_threads() {
        let ex = PrivateKeyExecutor::new(4, 4, true, metrics());
        let (name, policy) = ex
            .run_unauthenticated(|| {
                // SAFETY: sched_getscheduler of the calling thread.
                (std::thread::current().name().map(str::to_string), unsafe { libc::sched_getscheduler(0) })
            })
            .await
            .unwrap();
        assert!(name.unwrap().starts_with("paysign-unauth-"));
        assert_eq!(policy, libc::SCHED_IDLE);
        // SAFETY: getpriority of the calling thread.
        let (name, nice) = ex
            .run(|| (std::thread::current().name().map(str::to_string), unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }))
            .await
            .unwrap();
        assert!(name.unwrap().starts_with("paysign-pk-"));
        assert_eq!(nice, 10);
    }
}
