//! `postgres-sink`, under upstream's name and contract: consumes `stellar.ledger.batch.v1`
//! events and writes each batch's ledger, transactions and operations into PostgreSQL at
//! `POSTGRES_DSN` (upstream's default `postgres://postgres:postgres@localhost:5432/postgres?
//! sslmode=disable`; key-value DSNs work too; plain TCP or a Unix socket folder as `host`, no
//! TLS).
//!
//! Tables (created if missing, upstream's names and columns): `stellar_ledgers`,
//! `stellar_transactions`, `stellar_operations` (see `docs/processes.md`). Every row is an upsert
//! by its id, and one batch is one database transaction, committed before the next batch is
//! read: writing a range again leaves the same rows, and a sink stopped at any point leaves
//! whole ledgers. The DSN is never logged (it holds the password); errors name the user, host,
//! port and database.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use tokio::sync::Mutex;
use tokio_postgres::{Client, Config, NoTls, Statement};

use crate::batch::rows::LedgerBatch;
use crate::component::V1Identity;
use crate::sink::{self, BatchWriter};

/// How the sink describes itself.
pub const IDENTITY: V1Identity = sink::identity(
    "postgres-sink",
    "Upserts each stellar.ledger.batch.v1 batch's ledger, transactions and operations into \
     PostgreSQL (POSTGRES_DSN)",
);

/// Upstream's default `POSTGRES_DSN`.
pub const DEFAULT_DSN: &str =
    "postgres://postgres:postgres@localhost:5432/postgres?sslmode=disable";

/// How long the sink keeps trying to reach the database at start.
const CONNECT_FOR: Duration = Duration::from_secs(10);

/// The tables, as upstream's sink creates them.
pub const SCHEMA: &str = "
create table if not exists stellar_ledgers (
  id text primary key,
  network_passphrase text not null,
  ledger_sequence integer not null,
  closed_at_unix bigint not null,
  ledger_hash text not null,
  previous_ledger_hash text not null,
  protocol_version integer not null,
  transaction_count integer not null,
  schema_version text not null,
  extraction_version text not null,
  unique (network_passphrase, ledger_sequence)
);
create table if not exists stellar_transactions (
  id text primary key,
  network_passphrase text not null,
  ledger_sequence integer not null,
  transaction_index integer not null,
  transaction_hash text not null,
  successful boolean not null,
  envelope_xdr text not null,
  result_xdr text not null,
  meta_xdr text not null,
  unique (network_passphrase, ledger_sequence, transaction_index)
);
create table if not exists stellar_operations (
  id text primary key,
  transaction_id text not null references stellar_transactions(id) on delete cascade,
  network_passphrase text not null,
  ledger_sequence integer not null,
  transaction_index integer not null,
  operation_index integer not null,
  operation_type text not null,
  operation_xdr text not null,
  unique (network_passphrase, ledger_sequence, transaction_index, operation_index)
);
";

const UPSERT_LEDGER: &str = "
insert into stellar_ledgers (id, network_passphrase, ledger_sequence, closed_at_unix,
  ledger_hash, previous_ledger_hash, protocol_version, transaction_count, schema_version,
  extraction_version)
values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
on conflict (id) do update set closed_at_unix = excluded.closed_at_unix,
  ledger_hash = excluded.ledger_hash, previous_ledger_hash = excluded.previous_ledger_hash,
  protocol_version = excluded.protocol_version, transaction_count = excluded.transaction_count,
  schema_version = excluded.schema_version, extraction_version = excluded.extraction_version";

const UPSERT_TRANSACTION: &str = "
insert into stellar_transactions (id, network_passphrase, ledger_sequence, transaction_index,
  transaction_hash, successful, envelope_xdr, result_xdr, meta_xdr)
values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
on conflict (id) do update set successful = excluded.successful,
  envelope_xdr = excluded.envelope_xdr, result_xdr = excluded.result_xdr,
  meta_xdr = excluded.meta_xdr";

const UPSERT_OPERATION: &str = "
insert into stellar_operations (id, transaction_id, network_passphrase, ledger_sequence,
  transaction_index, operation_index, operation_type, operation_xdr)
values ($1, $2, $3, $4, $5, $6, $7, $8)
on conflict (id) do update set operation_type = excluded.operation_type,
  operation_xdr = excluded.operation_xdr";

/// `POSTGRES_DSN`, parsed (the value itself is never shown: it holds the password).
pub fn config_from_env() -> Result<Config, String> {
    let dsn = std::env::var("POSTGRES_DSN")
        .ok()
        .filter(|value| !value.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_DSN.to_string());
    dsn.parse::<Config>()
        .map_err(|e| format!("POSTGRES_DSN: not a PostgreSQL connection string ({e})"))
}

/// `user@host:port/database` of `config`, for messages.
pub fn describe(config: &Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".to_string());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        config.get_user().unwrap_or("?"),
        config.get_dbname().unwrap_or("")
    )
}

/// The database and the prepared upserts.
pub struct PostgresWriter {
    client: Mutex<Client>,
    ledger: Statement,
    transaction: Statement,
    operation: Statement,
}

impl PostgresWriter {
    /// Connects (retrying for up to [`CONNECT_FOR`] while the server is not there yet), creates
    /// the tables and prepares the upserts.
    pub async fn connect(config: Config) -> anyhow::Result<PostgresWriter> {
        let target = describe(&config);
        let began = Instant::now();
        let (client, connection) = loop {
            match config.connect(NoTls).await {
                Ok(connected) => break connected,
                Err(e) if began.elapsed() < CONNECT_FOR && e.as_db_error().is_none() => {
                    log::warn!("POSTGRES_DSN: cannot connect to {target} yet: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(anyhow!("POSTGRES_DSN: cannot connect to {target}: {e}")),
            }
        };
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                log::error!("the connection to PostgreSQL ended: {e}");
            }
        });
        client
            .batch_execute(SCHEMA)
            .await
            .with_context(|| format!("creating the tables in {target}"))?;
        let ledger = client.prepare(UPSERT_LEDGER).await?;
        let transaction = client.prepare(UPSERT_TRANSACTION).await?;
        let operation = client.prepare(UPSERT_OPERATION).await?;
        log::info!("writing ledger batches into {target}");
        Ok(PostgresWriter {
            client: Mutex::new(client),
            ledger,
            transaction,
            operation,
        })
    }
}

fn int(value: u32, column: &str) -> anyhow::Result<i32> {
    i32::try_from(value).map_err(|_| anyhow!("{column} {value} does not fit an integer column"))
}

#[tonic::async_trait]
impl BatchWriter for PostgresWriter {
    async fn write(&self, batch: &LedgerBatch) -> anyhow::Result<()> {
        let mut client = self.client.lock().await;
        let tx = client.transaction().await?;
        for row in &batch.ledgers {
            tx.execute(
                &self.ledger,
                &[
                    &row.id,
                    &row.network_passphrase,
                    &int(row.ledger_sequence, "ledger_sequence")?,
                    &row.closed_at_unix,
                    &row.ledger_hash,
                    &row.previous_ledger_hash,
                    &int(row.protocol_version, "protocol_version")?,
                    &int(row.transaction_count, "transaction_count")?,
                    &row.schema_version,
                    &row.extraction_version,
                ],
            )
            .await
            .context("stellar_ledgers")?;
        }
        for row in &batch.transactions {
            tx.execute(
                &self.transaction,
                &[
                    &row.id,
                    &row.network_passphrase,
                    &int(row.ledger_sequence, "ledger_sequence")?,
                    &int(row.transaction_index, "transaction_index")?,
                    &row.transaction_hash,
                    &row.successful,
                    &row.envelope_xdr,
                    &row.result_xdr,
                    &row.meta_xdr,
                ],
            )
            .await
            .context("stellar_transactions")?;
        }
        for row in &batch.operations {
            tx.execute(
                &self.operation,
                &[
                    &row.id,
                    &row.transaction_id,
                    &row.network_passphrase,
                    &int(row.ledger_sequence, "ledger_sequence")?,
                    &int(row.transaction_index, "transaction_index")?,
                    &int(row.operation_index, "operation_index")?,
                    &row.operation_type,
                    &row.operation_xdr,
                ],
            )
            .await
            .context("stellar_operations")?;
        }
        tx.commit().await.context("committing")?;
        Ok(())
    }
}

/// The binary's entry point; `args` excludes the program name.
pub fn main(args: &[String]) -> ExitCode {
    sink::main(&IDENTITY, args, config_from_env, PostgresWriter::connect)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_server_never_the_password() {
        let config: Config = DEFAULT_DSN.parse().unwrap();
        let described = describe(&config);
        assert_eq!(described, "postgres@localhost:5432/postgres");
        let config: Config = "host=/run/pg port=5433 user=u password=secret dbname=d"
            .parse()
            .unwrap();
        assert_eq!(describe(&config), "u@/run/pg:5433/d");
    }
}
