//! State a plugin shares between its streams and its root, for both hosts:
//! a Wasm VM runs one thread, while the native module runs one pipeline for
//! every worker thread of the proxy (and its root on the main thread). The
//! pipeline is written once against these types.
//!
//! [`Lock`] never traps and never deadlocks on re-entry: in a Wasm VM (one
//! thread) the lock is busy only when a host callback re-entered the module
//! while it was held, and the caller gets `None` (as a `RefCell` borrow
//! would fail); natively the workers wait for each other (the sections
//! hold it for a few microseconds and make no host call that re-enters the
//! module while they do). A lock a panic left poisoned is taken as is: the
//! native module recovers from a panic per stream, and the data behind every
//! lock stays valid between two statements.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Mutable state shared by streams and the root.
#[derive(Debug, Default)]
pub struct Lock<T>(Mutex<T>);

impl<T> Lock<T> {
    pub fn new(value: T) -> Self {
        Self(Mutex::new(value))
    }

    /// Runs `f` on the value; `None` when this thread already holds it.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let mut guard = self.guard()?;
        Some(f(&mut guard))
    }

    #[cfg(target_family = "wasm")]
    fn guard(&self) -> Option<MutexGuard<'_, T>> {
        match self.0.try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    #[cfg(not(target_family = "wasm"))]
    fn guard(&self) -> Option<MutexGuard<'_, T>> {
        Some(self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// A small copyable value shared by streams and the root.
#[derive(Debug, Default)]
pub struct Shared<T: Copy>(Mutex<T>);

impl<T: Copy> Shared<T> {
    pub fn new(value: T) -> Self {
        Self(Mutex::new(value))
    }

    pub fn get(&self) -> T {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn set(&self, value: T) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = value;
    }

    /// Replaces the value with `f(value)` in one step.
    pub fn update(&self, f: impl FnOnce(T) -> T) {
        let mut guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *guard = f(*guard);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_runs_the_closure_on_its_value() {
        let lock = Lock::new(1);
        assert_eq!(
            lock.with(|v| {
                *v += 1;
                *v
            }),
            Some(2)
        );
    }

    #[test]
    fn a_poisoned_lock_still_serves_its_value() {
        let lock = std::sync::Arc::new(Lock::new(7));
        let held = std::sync::Arc::clone(&lock);
        let _ = std::thread::spawn(move || held.with(|_| panic!("poison"))).join();
        assert_eq!(lock.with(|v| *v), Some(7));
        let shared = std::sync::Arc::new(Shared::new(3));
        shared.update(|v| v + 1);
        assert_eq!(shared.get(), 4);
    }
}
