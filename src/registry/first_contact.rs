//! One connection per TLS registry (issue 26). reqwest carries every request
//! to a host over one HTTP/2 connection once it has one, but requests sent
//! side by side before the first TLS handshake ends each open their own: it
//! learns the protocol (ALPN) only then. A run's first burst (the registry
//! cache read, the tag read and the upload sessions opened ahead) made six.
//! So until a registry's first request over TLS is answered, the others to
//! it wait; after it they share its connection.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Contact {
    #[default]
    Untouched,
    /// A first request is on its way; the others wait for it.
    Connecting,
    /// Answered (or failed): the others go ahead.
    Connected,
}

type Slot = Arc<(Mutex<Contact>, Condvar)>;

/// Per registry, whether its first request was answered. Shared by the
/// clients of one run, as their connections are.
#[derive(Clone, Default)]
pub(super) struct FirstContacts(Arc<Mutex<HashMap<String, Slot>>>);

/// Held by the first request to a registry while it is sent; dropping it
/// (answered, failed or given up) lets the others go.
pub(super) struct FirstRequest(Slot);

impl Drop for FirstRequest {
    fn drop(&mut self) {
        let (state, woken) = &*self.0;
        *state.lock().unwrap_or_else(|e| e.into_inner()) = Contact::Connected;
        woken.notify_all();
    }
}

impl FirstContacts {
    /// Waits while another request makes the first contact with `registry`;
    /// returns a guard when this request is the first.
    pub(super) fn enter(&self, registry: &str) -> Option<FirstRequest> {
        let slot = {
            let mut slots = self.0.lock().unwrap_or_else(|e| e.into_inner());
            slots.entry(registry.to_string()).or_default().clone()
        };
        let (state, woken) = &*slot;
        let mut contact = state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match *contact {
                Contact::Untouched => {
                    *contact = Contact::Connecting;
                    drop(contact);
                    return Some(FirstRequest(slot));
                }
                Contact::Connecting => {
                    contact = woken.wait(contact).unwrap_or_else(|e| e.into_inner());
                }
                Contact::Connected => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn the_others_wait_for_the_first_request_and_then_all_go_at_once() {
        let contacts = FirstContacts::default();
        let first = contacts.enter("registry.test").expect("the first is first");
        // Another registry is not held up.
        assert!(contacts.enter("other.test").is_some());
        let started = Instant::now();
        let waiter = {
            let contacts = contacts.clone();
            std::thread::spawn(move || {
                let guard = contacts.enter("registry.test");
                (guard.is_none(), started.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        drop(first);
        let (went_second, waited) = waiter.join().unwrap();
        assert!(went_second, "a second request became a first one");
        assert!(
            waited >= Duration::from_millis(50),
            "did not wait: {waited:?}"
        );
        assert!(contacts.enter("registry.test").is_none());
    }
}
