//! Publishing a tenant's outbox after a state change. At least once: an event is marked
//! published only after the publisher took it; one that failed stays for the next pass
//! (the next run, the next settings write).

use crate::domain::TenantId;
use crate::ports::{EventPublisher, Outbox};

/// What one pass over the outbox did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Published {
    pub published: usize,
    /// Events left in the outbox because publishing or marking them failed.
    pub left: usize,
}

/// Publishes every pending event of the tenant. Failures are logged, not returned: the
/// change they describe is already stored and the events stay pending.
pub async fn publish_outbox<S>(
    store: &S,
    events: &dyn EventPublisher,
    tenant: &TenantId,
) -> Published
where
    S: Outbox + ?Sized,
{
    let pending = match store.pending_events(tenant).await {
        Ok(p) if p.is_empty() => return Published::default(),
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(%tenant, error = %e, "reading the outbox failed; its events are published later");
            return Published::default();
        }
    };
    if let Err(e) = events.publish(&pending).await {
        tracing::warn!(%tenant, error = %e, pending = pending.len(), "publishing events failed; they stay in the outbox");
        return Published {
            published: 0,
            left: pending.len(),
        };
    }
    let ids: Vec<String> = pending.iter().map(|e| e.id.clone()).collect();
    match store.mark_published(tenant, &ids).await {
        Ok(()) => Published {
            published: ids.len(),
            left: 0,
        },
        Err(e) => {
            tracing::warn!(%tenant, error = %e, "marking events published failed; they will be sent again");
            Published {
                published: 0,
                left: ids.len(),
            }
        }
    }
}
