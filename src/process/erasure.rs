//! Erasing a customer's personal data: the one way it happens, for the API
//! (`POST /v1/customers/{id}/erase`) and the CLI (`orderlog privacy erase`).
//!
//! One commit appends `customer.erased` and destroys every data key of the customer's
//! (`store::vault`), so the receipt and the shredding can never be split by a crash.
//! From that commit on, no reader can open the customer's personal data in the log, in
//! delivery queues or dead letters, or in answers kept for retries: they all hold it
//! sealed, and show it as erased. What held it in the clear is then scrubbed: this
//! node's opened keys, and the raw storefront webhooks of the customer's orders in the
//! inbox. On SQLite the WAL is checkpointed, so that freed pages (zeroed by
//! `secure_delete`) are all that is left in the file.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::customer::{Customer, CustomerCommand, CustomerError, Erase, Erasure};
use crate::domain::values::CustomerId;
use crate::store::commands::{AggregateStore, CommandError};
use crate::store::metadata::CommandMetadata;
use crate::store::vault::{DataKeyWrite, Vault};
use crate::store::{sources, Database, StoreError};

/// What an erasure answers with, and what `GET /v1/customers/{id}/erasure` shows.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = ErasureReceipt)]
pub struct Receipt {
    pub customer_id: CustomerId,
    /// `erased`, or `not_erased` for a customer never erased.
    pub state: &'static str,
    /// The last erasure, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erasure: Option<ErasureOut>,
    /// How many erasures there were.
    pub erasures: usize,
    /// Data keys the customer holds now: 0 right after an erasure; more means personal
    /// data arrived since (a new order), which another erasure destroys.
    pub data_keys: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErasureOut {
    /// The sequence of its `customer.erased` in the customer's stream.
    pub receipt: usize,
    pub requested_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub erased_at: DateTime<Utc>,
}

impl From<&Erasure> for ErasureOut {
    fn from(e: &Erasure) -> Self {
        ErasureOut {
            receipt: e.sequence,
            requested_by: e.requested_by.as_str().to_owned(),
            on_behalf_of: e.on_behalf_of.as_ref().map(|t| t.as_str().to_owned()),
            reason: e.reason.as_ref().map(|t| t.as_str().to_owned()),
            erased_at: e.erased_at,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    #[error(transparent)]
    Command(#[from] CommandError<CustomerError>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Erasures<'a> {
    pub db: &'a Database,
    pub customers: &'a Arc<AggregateStore<Customer>>,
    pub vault: &'a Vault,
}

impl Erasures<'_> {
    /// Erases the customer's personal data, and returns the receipt.
    pub async fn erase(
        &self,
        erase: Erase,
        metadata: &CommandMetadata,
    ) -> Result<Receipt, ErasureError> {
        let customer_id = erase.customer_id.clone();
        let mut metadata = metadata.clone();
        metadata.data_key = Some(DataKeyWrite::DestroyAll {
            customer_id: customer_id.as_str().to_owned(),
        });
        let executed = self
            .customers
            .execute(
                customer_id.as_str(),
                CustomerCommand::Erase(erase),
                &metadata,
            )
            .await?;
        self.vault.forget(&customer_id);
        // The shredding has committed; what follows scrubs copies, and is safe to repeat:
        // a failure here is answered as one, and the erasure asked for again.
        sources::scrub_customer(self.db, customer_id.as_str()).await?;
        self.db.checkpoint().await?;
        self.receipt(customer_id, &executed.state).await
    }

    /// The customer's erasure state.
    pub async fn state(&self, customer_id: CustomerId) -> Result<Receipt, ErasureError> {
        let customer = self.customers.load(customer_id.as_str()).await?;
        self.receipt(customer_id, &customer).await
    }

    async fn receipt(
        &self,
        customer_id: CustomerId,
        customer: &Customer,
    ) -> Result<Receipt, ErasureError> {
        let last = customer.erasures().last();
        Ok(Receipt {
            state: if last.is_some() {
                "erased"
            } else {
                "not_erased"
            },
            erasure: last.map(ErasureOut::from),
            erasures: customer.erasures().len(),
            data_keys: self.vault.keys_of(&customer_id).await?,
            customer_id,
        })
    }
}
