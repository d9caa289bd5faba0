// SPDX-License-Identifier: GPL-2.0

//! Memory allocation scopes.
//!
//! Code on the block I/O path must not let memory allocations start I/O to reclaim memory: that
//! I/O could wait for the I/O being served. [`GFP_NOIO`] says so for one allocation; a
//! [`NoIoScope`] says so for every allocation the current task makes while it exists, including
//! those made by code that passes [`GFP_KERNEL`] (`memalloc_noio_save()` and
//! `memalloc_noio_restore()`).
//!
//! C header: [`include/linux/sched/mm.h`](srctree/include/linux/sched/mm.h)
//!
//! # Examples
//!
//! ```
//! use kernel::memalloc::{noio_scope, NoIoScope};
//!
//! // Every allocation in the closure is done as if with `GFP_NOIO`.
//! let v = noio_scope(|| KVec::<u8>::with_capacity(64, GFP_KERNEL))?;
//! assert!(v.capacity() >= 64);
//!
//! {
//!     let _noio = NoIoScope::new();
//!     let _page = kernel::page::Page::alloc_page(GFP_KERNEL)?;
//! }
//! // Allocations may start I/O again.
//! # Ok::<(), Error>(())
//! ```
//!
//! [`GFP_NOIO`]: crate::alloc::flags::GFP_NOIO
//! [`GFP_KERNEL`]: crate::alloc::flags::GFP_KERNEL

use crate::{bindings, ffi::c_uint, types::NotThreadSafe};

/// A scope in which the memory allocations of the current task do not start I/O.
///
/// Creating it calls `memalloc_noio_save()`, dropping it `memalloc_noio_restore()`: while it
/// exists, every allocation of the current task is done as if `__GFP_IO` (and `__GFP_FS`) was not
/// in its flags.
///
/// Scopes nest: a scope created inside another one saves that the flag was already set, and
/// dropping it leaves the flag set; only dropping the outermost scope clears it. Scopes must be
/// dropped in the reverse order of their creation, which is what happens to guards in nested
/// blocks; [`noio_scope`] enforces it. A scope that is leaked (for example with
/// [`core::mem::forget`]) leaves the current task in the no-I/O mode.
///
/// It cannot be sent to another thread since the flag belongs to the task that created the
/// scope.
///
/// # Invariants
///
/// `flags` is the value returned by the `memalloc_noio_save()` call that created this scope on the
/// current task.
#[must_use = "the scope ends when the guard is dropped"]
pub struct NoIoScope {
    flags: c_uint,
    _not_send: NotThreadSafe,
}

impl NoIoScope {
    /// Starts a scope in which the allocations of the current task do not start I/O.
    ///
    /// May be called in any context.
    #[inline]
    pub fn new() -> Self {
        // INVARIANT: `flags` is what `memalloc_noio_save()` returned, on the current task since
        // `Self` is not `Send`.
        Self {
            // SAFETY: `memalloc_noio_save()` only changes a flag of the current task and may be
            // called in any context.
            flags: unsafe { bindings::memalloc_noio_save() },
            _not_send: NotThreadSafe,
        }
    }
}

impl Default for NoIoScope {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NoIoScope {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: By the type invariants, `self.flags` comes from the `memalloc_noio_save()` call
        // that created this scope on this task.
        unsafe { bindings::memalloc_noio_restore(self.flags) };
    }
}

/// Calls `f` in a [`NoIoScope`] and returns what it returns.
#[inline]
pub fn noio_scope<R>(f: impl FnOnce() -> R) -> R {
    let _scope = NoIoScope::new();
    f()
}

#[cfg(CONFIG_RUST_IO_CONTEXT_KUNIT_TEST)]
#[macros::kunit_tests(rust_io_context)]
mod tests {
    use super::*;
    use crate::{
        prelude::*,
        sync::{
            atomic::{Atomic, Relaxed},
            new_condvar, new_mutex, Arc, Completion, CondVar, CondVarTimeoutResult, Mutex,
        },
        task::Task,
        time::msecs_to_jiffies,
        workqueue::{
            self, impl_has_delayed_work, impl_has_work, new_delayed_work, new_work, DelayedWork,
            OwnedQueue, QueueFlag, Work, WorkItem,
        },
    };

    fn noio_set() -> bool {
        // SAFETY: The current task is valid, and only the current task changes its own `flags`.
        let flags = unsafe { (*Task::current_raw()).flags };
        flags & bindings::PF_MEMALLOC_NOIO != 0
    }

    #[test]
    fn noio_scope_nests() {
        assert!(!noio_set());
        {
            let _outer = NoIoScope::new();
            assert!(noio_set());
            {
                let _inner = NoIoScope::new();
                assert!(noio_set());
            }
            // The inner scope restored what it found: the outer scope is still in force.
            assert!(noio_set());
        }
        assert!(!noio_set());

        assert!(noio_scope(noio_set));
        assert!(!noio_set());
    }

    #[test]
    fn completion_wait_timeout() -> Result {
        let done = KBox::pin_init(Completion::new(), GFP_KERNEL)?;

        assert_eq!(done.wait_for_completion_timeout(2), Err(ETIMEDOUT));
        assert_eq!(done.wait_for_completion_io_timeout(2), Err(ETIMEDOUT));

        done.complete_all();
        let timeout = msecs_to_jiffies(10_000);
        let left = done.wait_for_completion_timeout(timeout)?;
        assert!(left > 0 && left <= timeout);
        let left = done.wait_for_completion_io_timeout(timeout)?;
        assert!(left > 0 && left <= timeout);
        Ok(())
    }

    #[pin_data]
    struct Flag {
        #[pin]
        set: Mutex<bool>,
        #[pin]
        changed: CondVar,
        #[pin]
        work: Work<Flag>,
    }

    impl_has_work! {
        impl HasWork<Self> for Flag { self.work }
    }

    impl WorkItem for Flag {
        type Pointer = Arc<Flag>;

        fn run(this: Arc<Flag>) {
            *this.set.lock() = true;
            this.changed.notify_all();
        }
    }

    #[test]
    fn condvar_wait_timeout() -> Result {
        let flag = Arc::pin_init(
            pin_init!(Flag {
                set <- new_mutex!(false),
                changed <- new_condvar!(),
                work <- new_work!("Flag::work"),
            }),
            GFP_KERNEL,
        )?;

        // Nobody notifies: the wait ends with a timeout (possibly after spurious wake-ups).
        let mut set = flag.set.lock();
        let mut timed_out = false;
        for _ in 0..100 {
            if let CondVarTimeoutResult::Timeout = flag.changed.wait_timeout(&mut set, 2) {
                timed_out = true;
                break;
            }
        }
        assert!(timed_out);
        assert!(!*set);

        // A work item sets the flag and notifies: the wait ends before the timeout.
        let _ = workqueue::system().enqueue(flag.clone());
        let timeout = msecs_to_jiffies(10_000);
        while !*set {
            match flag.changed.wait_timeout(&mut set, timeout) {
                CondVarTimeoutResult::Woken { .. } => {}
                _ => break,
            }
        }
        assert!(*set);
        Ok(())
    }

    #[pin_data]
    struct Job {
        runs: Atomic<i32>,
        // Completed by the job if set.
        #[pin]
        started: Completion,
        // Waited for by the job if set.
        #[pin]
        release: Completion,
        block: bool,
        #[pin]
        work: Work<Job>,
    }

    impl_has_work! {
        impl HasWork<Self> for Job { self.work }
    }

    impl WorkItem for Job {
        type Pointer = Arc<Job>;

        fn run(this: Arc<Job>) {
            this.runs.add(1, Relaxed);
            this.started.complete_all();
            if this.block {
                // Bounded, so that a failing test does not hang the queue for ever.
                let _ = this
                    .release
                    .wait_for_completion_timeout(msecs_to_jiffies(10_000));
            }
        }
    }

    fn new_job(block: bool) -> Result<Arc<Job>> {
        Arc::pin_init(
            pin_init!(Job {
                runs: Atomic::new(0),
                started <- Completion::new(),
                release <- Completion::new(),
                block,
                work <- new_work!("Job::work"),
            }),
            GFP_KERNEL,
        )
    }

    #[test]
    fn owned_queue_flags() {
        assert_eq!(
            OwnedQueue::new(c"rust_io_ctx_bad", QueueFlag::MemReclaim.into(), 1).err(),
            Some(EINVAL)
        );
        assert_eq!(
            OwnedQueue::new(
                c"rust_io_ctx_bad",
                QueueFlag::Unbound | QueueFlag::PerCpu,
                1
            )
            .err(),
            Some(EINVAL)
        );
        assert_eq!(
            OwnedQueue::new(c"rust_io_ctx_bad", QueueFlag::Unbound.into(), 4096).err(),
            Some(EINVAL)
        );
    }

    #[test]
    fn owned_queue_runs_and_flushes() -> Result {
        let queue = OwnedQueue::new(
            c"rust_io_ctx_test",
            QueueFlag::Unbound | QueueFlag::MemReclaim,
            1,
        )?;
        let job = new_job(false)?;

        assert!(queue.enqueue(job.clone()).is_ok());
        queue.flush();
        // `flush` returned, so the job has run, and it is not pending any more.
        assert_eq!(job.runs.load(Relaxed), 1);
        assert!(job.work.cancel_sync().is_none());

        // It can be enqueued again; dropping the queue runs it.
        assert!(queue.enqueue(job.clone()).is_ok());
        drop(queue);
        assert_eq!(job.runs.load(Relaxed), 2);

        // The queue gave back every reference it took.
        assert!(Arc::into_unique_or_drop(job).is_some());
        Ok(())
    }

    #[test]
    fn cancel_pending_work() -> Result {
        // One work item at a time: `job` stays pending while `blocker` runs.
        let queue = OwnedQueue::new(
            c"rust_io_ctx_cancel",
            QueueFlag::Unbound | QueueFlag::MemReclaim,
            1,
        )?;
        let blocker = new_job(true)?;
        let job = new_job(false)?;

        assert!(queue.enqueue(blocker.clone()).is_ok());
        assert!(blocker
            .started
            .wait_for_completion_timeout(msecs_to_jiffies(10_000))
            .is_ok());
        assert!(queue.enqueue(job.clone()).is_ok());
        // Enqueueing a pending item fails and gives the reference back.
        assert!(queue.enqueue(job.clone()).is_err());

        let cancelled = job.work.cancel_sync();
        blocker.release.complete_all();

        // The reference the queue held came back, and only once.
        assert!(cancelled.is_some());
        drop(cancelled);
        assert!(job.work.cancel_sync().is_none());

        drop(queue);
        assert_eq!(job.runs.load(Relaxed), 0);
        assert_eq!(blocker.runs.load(Relaxed), 1);
        assert!(Arc::into_unique_or_drop(job).is_some());
        assert!(Arc::into_unique_or_drop(blocker).is_some());
        Ok(())
    }

    #[pin_data]
    struct Timer {
        runs: Atomic<i32>,
        #[pin]
        work: DelayedWork<Timer>,
    }

    impl_has_delayed_work! {
        impl HasDelayedWork<Self> for Timer { self.work }
    }

    impl WorkItem for Timer {
        type Pointer = Arc<Timer>;

        fn run(this: Arc<Timer>) {
            this.runs.add(1, Relaxed);
        }
    }

    #[test]
    fn cancel_delayed_work() -> Result {
        let timer = Arc::pin_init(
            pin_init!(Timer {
                runs: Atomic::new(0),
                work <- new_delayed_work!("Timer::work"),
            }),
            GFP_KERNEL,
        )?;

        assert!(workqueue::system()
            .enqueue_delayed(timer.clone(), msecs_to_jiffies(60_000))
            .is_ok());

        let cancelled = timer.work.cancel_sync();
        assert!(cancelled.is_some());
        drop(cancelled);
        assert!(timer.work.cancel_sync().is_none());

        assert_eq!(timer.runs.load(Relaxed), 0);
        assert!(Arc::into_unique_or_drop(timer).is_some());
        Ok(())
    }
}
