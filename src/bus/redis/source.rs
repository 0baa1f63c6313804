//! Where the Redis bus finds its Redis: one fixed server (`redis://`, `rediss://`), or the
//! current primary of a service that Sentinel watches
//! (`redis+sentinel://[:password@]host:port[,host:port…]/service[/db]`). Asked again on
//! every (re)connect, so after a failover the link comes back on the new primary.

use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{ConnectionAddr, ErrorKind, RedisError, RedisResult};

pub enum Source {
    Direct(redis::Client),
    /// A Redis Cluster's seed nodes: the cluster connection finds the rest.
    Cluster(Vec<String>),
    /// Sentinel's client keeps the sentinels it learnt of; one lookup at a time.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

/// The URL scheme of a Sentinel-watched service.
pub const SENTINEL_SCHEME: &str = "redis+sentinel://";

impl Source {
    pub fn parse(url: &str) -> RedisResult<Self> {
        match url.strip_prefix(SENTINEL_SCHEME) {
            None => Ok(Source::Direct(redis::Client::open(url)?)),
            Some(rest) => Ok(Source::Sentinel(tokio::sync::Mutex::new(sentinel(rest)?))),
        }
    }

    /// A client for the server to use now: for Sentinel, the primary it names, once that
    /// server confirms it is a primary.
    pub async fn client(&self) -> RedisResult<redis::Client> {
        match self {
            Source::Direct(client) => Ok(client.clone()),
            Source::Cluster(seeds) => redis::Client::open(seeds[0].as_str()),
            Source::Sentinel(sentinel) => sentinel.lock().await.async_get_client().await,
        }
    }

    /// A RESP3 client for one primary of the cluster, at the address the cluster
    /// announces, with the seeds' credentials and TLS settings.
    pub fn shard_client(&self, host: &str, port: u16) -> RedisResult<redis::Client> {
        use redis::IntoConnectionInfo;
        let Source::Cluster(seeds) = self else {
            return Err(invalid("shard links need cluster seeds"));
        };
        let seed = seeds
            .first()
            .ok_or_else(|| invalid("no cluster seeds"))?
            .as_str()
            .into_connection_info()?;
        let addr = match seed.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host: host.to_string(),
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host.to_string(), port),
        };
        let redis = seed
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        redis::Client::open(seed.set_addr(addr).set_redis_settings(redis))
    }
}

fn invalid(reason: &'static str) -> RedisError {
    RedisError::from((ErrorKind::InvalidClientConfig, reason))
}

/// `[:password@]host:port[,host:port…]/service[/db]`
fn sentinel(rest: &str) -> RedisResult<SentinelClient> {
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((auth, rest)) => (Some(auth), rest),
        None => (None, rest),
    };
    let (hosts, path) = rest
        .split_once('/')
        .ok_or_else(|| invalid("redis+sentinel:// needs /<service> after the sentinels"))?;
    let (service, db) = match path.split_once('/') {
        Some((service, db)) => (service, Some(db)),
        None => (path, None),
    };
    if service.is_empty() {
        return Err(invalid("redis+sentinel:// needs a service name"));
    }
    let sentinels = hosts
        .split(',')
        .map(|hp| {
            let (host, port) = hp
                .rsplit_once(':')
                .ok_or_else(|| invalid("each sentinel is host:port"))?;
            let port = port
                .parse()
                .map_err(|_| invalid("a sentinel's port is a number"))?;
            Ok(ConnectionAddr::Tcp(host.to_string(), port))
        })
        .collect::<RedisResult<Vec<_>>>()?;
    let mut builder = SentinelClientBuilder::new(sentinels, service, SentinelServerType::Master)?;
    if let Some(password) = auth
        .map(|a| a.strip_prefix(':').unwrap_or(a))
        .filter(|p| !p.is_empty())
    {
        builder = builder.set_client_to_redis_password(password);
    }
    if let Some(db) = db.filter(|d| !d.is_empty()) {
        let db = db
            .parse()
            .map_err(|_| invalid("the database is a number"))?;
        builder = builder.set_client_to_redis_db(db);
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_parse_and_bad_ones_say_why() {
        assert!(matches!(
            Source::parse("redis://127.0.0.1:6379"),
            Ok(Source::Direct(_))
        ));
        let ok = Source::parse("redis+sentinel://:pw@127.0.0.1:26379,127.0.0.2:26380/mymaster/2");
        assert!(matches!(ok, Ok(Source::Sentinel(_))));
        for bad in [
            "redis+sentinel://127.0.0.1:26379",
            "redis+sentinel://127.0.0.1/mymaster",
            "redis+sentinel://127.0.0.1:x/mymaster",
            "redis+sentinel://127.0.0.1:26379/",
            "redis+sentinel://127.0.0.1:26379/m/db",
        ] {
            assert!(Source::parse(bad).is_err(), "{bad}");
        }
    }
}
