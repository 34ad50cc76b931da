//! Bounded parallelism with results in input order, so output never depends
//! on scheduling.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

/// Runs `f` over `items` on at most `jobs` threads; results keep the input order.
pub fn map_ordered<T: Sync, R: Send>(
    items: &[T],
    jobs: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, items.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.expect("every index is claimed by exactly one worker"))
        .collect()
}

/// A yes-or-no answer that one thread gives once and others wait for: the
/// image push tells the attestations beside it whether their subject is in
/// the registry. Dropped unanswered, it answers no, so no waiter hangs.
#[derive(Default)]
pub struct Gate {
    answer: Mutex<Option<bool>>,
    given: Condvar,
}

impl Gate {
    /// Answers `yes`; only the first answer counts.
    pub fn answer(&self, yes: bool) {
        let mut a = self.answer.lock().unwrap_or_else(|e| e.into_inner());
        if a.is_none() {
            *a = Some(yes);
            self.given.notify_all();
        }
    }

    /// Waits for the answer.
    pub fn wait(&self) -> bool {
        let mut a = self.answer.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(yes) = *a {
                return yes;
            }
            a = self.given.wait(a).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// A guard that answers no when dropped unless the gate was answered
    /// (a panic or an early return on the answering side).
    pub fn no_unless_answered(&self) -> impl Drop + '_ {
        struct Guard<'a>(&'a Gate);
        impl Drop for Guard<'_> {
            fn drop(&mut self) {
                self.0.answer(false);
            }
        }
        Guard(self)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_input_order_whatever_finishes_first() {
        let items: Vec<u64> = (0..20).collect();
        let out = super::map_ordered(&items, 4, |&i| {
            std::thread::sleep(std::time::Duration::from_millis(20 - i));
            i * 2
        });
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
    }
}

#[cfg(test)]
mod gate_tests {
    use super::Gate;

    #[test]
    fn a_waiter_hears_the_first_answer_and_a_dropped_guard_says_no() {
        let gate = Gate::default();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| gate.wait());
            gate.answer(true);
            gate.answer(false);
            assert!(waiter.join().unwrap());
        });
        let unanswered = Gate::default();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| unanswered.wait());
            drop(unanswered.no_unless_answered());
            assert!(!waiter.join().unwrap());
        });
    }
}
