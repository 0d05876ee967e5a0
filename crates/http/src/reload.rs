//! One reloadable-state type for every flow (the gateway and its notification listener, the
//! sandbox): readers take the current value once (an `Arc` clone) and keep it to the end of
//! their request; reloads run one at a time, each building from the value the previous one
//! swapped in, so the last reload to succeed is the one in force and generations count exactly.

use std::sync::{Arc, Mutex, RwLock};

pub struct Reloadable<T> {
    current: RwLock<Arc<T>>,
    /// Held for the whole of a reload: build and swap are one step.
    reloading: Mutex<()>,
}

impl<T> Reloadable<T> {
    pub fn new(initial: T) -> Self {
        Reloadable { current: RwLock::new(Arc::new(initial)), reloading: Mutex::new(()) }
    }

    /// The value for one request.
    pub fn current(&self) -> Arc<T> {
        match self.current.read() {
            Ok(v) => v.clone(),
            // A panic while swapping cannot leave a half-written Arc: use what is there.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Builds the next value from the current one and swaps it in, or leaves everything as it
    /// was when `build` fails. Concurrent reloads wait for each other.
    pub fn reload<E>(&self, build: impl FnOnce(&Arc<T>) -> Result<T, E>) -> Result<Arc<T>, E> {
        self.reload_and(build, |_| {})
    }

    /// [`Self::reload`], then `swapped` with the new value while no other reload can run (for
    /// what must follow the swap in the same order, e.g. the generation metric).
    pub fn reload_and<E>(&self, build: impl FnOnce(&Arc<T>) -> Result<T, E>, swapped: impl FnOnce(&Arc<T>)) -> Result<Arc<T>, E> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let next = Arc::new(build(&self.current())?);
        match self.current.write() {
            Ok(mut cur) => *cur = next.clone(),
            Err(poisoned) => *poisoned.into_inner() = next.clone(),
        }
        swapped(&next);
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_reloads_each_build_on_the_last_one() {
        let r = Arc::new(Reloadable::new(0u64));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        r.reload(|cur| Ok::<_, ()>(**cur + 1)).unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(*r.current(), 800);
        assert_eq!(r.reload(|_| Err("bad file")).unwrap_err(), "bad file");
        assert_eq!(*r.current(), 800);
    }
}
