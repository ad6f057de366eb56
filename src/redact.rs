//! Masking credentials in text that may reach a log, an error message or a page: the one
//! redaction used by the config, the catalog and the history store.

/// Replaces the password of `scheme://user:password@host`, and the value of any query
/// parameter whose name contains `password`, `secret` or `token` (`?password=...`, as
/// libpq and sqlx accept), with `***`; other text is unchanged.
pub fn redact_uri(uri: &str) -> String {
    let Some(scheme_end) = uri.find("://") else {
        return uri.to_string();
    };
    let authority_start = scheme_end + 3;
    let rest = &uri[authority_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let mut out = uri[..authority_start].to_string();
    match authority.rfind('@').map(|at| (&authority[..at], &authority[at..])) {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _password)) => out.push_str(&format!("{user}:***{host}")),
            None => out.push_str(authority),
        },
        None => out.push_str(authority),
    }
    let tail = &rest[authority_end..];
    match tail.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) =
                query.split_once('#').map_or((query, None), |(query, fragment)| (query, Some(fragment)));
            let parameters: Vec<String> = query
                .split('&')
                .map(|parameter| match parameter.split_once('=') {
                    Some((name, _))
                        if ["password", "secret", "token"]
                            .iter()
                            .any(|word| name.to_ascii_lowercase().contains(word)) =>
                    {
                        format!("{name}=***")
                    }
                    _ => parameter.to_string(),
                })
                .collect();
            out.push_str(&format!("{path}?{}", parameters.join("&")));
            if let Some(fragment) = fragment {
                out.push_str(&format!("#{fragment}"));
            }
        }
        None => out.push_str(tail),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_lose_their_password() {
        assert_eq!(redact_uri("postgres://icewatch:s3cret@db:5432/x"), "postgres://icewatch:***@db:5432/x");
        assert_eq!(redact_uri("postgres://icewatch@db/x"), "postgres://icewatch@db/x");
        assert_eq!(redact_uri("sqlite://demo/catalog.db"), "sqlite://demo/catalog.db");
        assert_eq!(redact_uri("http://u:p@h/a@b"), "http://u:***@h/a@b");
        assert_eq!(
            redact_uri("postgres://db/x?user=a&password=s3cret&sslmode=require"),
            "postgres://db/x?user=a&password=***&sslmode=require"
        );
        assert_eq!(redact_uri("https://h/p?access_token=abc#top"), "https://h/p?access_token=***#top");
    }

    #[test]
    fn history_and_catalog_uris_mask_the_same_parameters() {
        assert_eq!(
            redact_uri("postgresql://u:pw@h/db?sslpassword=x&client_secret=y&token=z&mode=rw"),
            "postgresql://u:***@h/db?sslpassword=***&client_secret=***&token=***&mode=rw"
        );
    }
}
