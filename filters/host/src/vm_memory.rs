//! `meshguard_vm_memory_bytes{filter}`: the linear memory of the largest of a
//! plugin's Wasm VMs in this Envoy process (Envoy reports no VM memory).
//!
//! A VM's linear memory only grows, and Envoy creates and drops VMs without
//! telling the module (a VM made for a config push is destroyed without its
//! root context ending), so a sum over VMs would count the dropped ones
//! forever. The largest VM is what bounds the plugin's footprint: each VM
//! raises the gauge to its own size when it grows. Reading the size is one
//! wasm instruction: a request costs no host call unless the memory grew.

use std::sync::atomic::{AtomicU32, Ordering};

use meshguard_core::metrics::{tagged, VM_MEMORY};

use crate::host::{Gauge, PluginHost};

/// Bytes in a wasm page.
const PAGE: u64 = 64 * 1024;

/// The size this VM last reported, in pages (statics are per VM: one
/// instance, one thread).
static REPORTED_PAGES: AtomicU32 = AtomicU32::new(0);

/// One root context's handle on the gauge.
#[derive(Debug)]
pub struct VmMemory {
    gauge: Gauge,
}

impl VmMemory {
    /// Defines the gauge for `filter` and reports this VM's size; `None`
    /// outside a Wasm VM (the native module has no VM: no gauge).
    pub fn define<H: PluginHost>(host: &H, filter: &str) -> Option<Self> {
        if !cfg!(target_family = "wasm") {
            return None;
        }
        let memory = Self {
            gauge: host.define_gauge(&tagged(VM_MEMORY, &[("filter", filter)])),
        };
        // A new root in a VM that already reported: the gauge may be new.
        REPORTED_PAGES.store(0, Ordering::Relaxed);
        memory.observe(host);
        Some(memory)
    }

    /// Raises the gauge to this VM's size when the VM grew since it last
    /// reported.
    pub fn observe<H: PluginHost>(&self, host: &H) {
        let now = pages();
        if now > REPORTED_PAGES.load(Ordering::Relaxed) {
            REPORTED_PAGES.store(now, Ordering::Relaxed);
            let bytes = u64::from(now).saturating_mul(PAGE);
            if host
                .gauge_value(self.gauge)
                .is_some_and(|current| current < bytes)
            {
                host.set(self.gauge, bytes);
            }
        }
    }
}

/// This VM's linear memory, in pages (native builds have none).
fn pages() -> u32 {
    #[cfg(target_family = "wasm")]
    {
        u32::try_from(core::arch::wasm32::memory_size(0)).unwrap_or(u32::MAX)
    }
    #[cfg(not(target_family = "wasm"))]
    {
        0
    }
}
