//! Secrets never reach logs, errors or `status`: URI passwords, Azure account keys, SAS
//! signatures and SASL passwords are replaced by `***` in any text orderlake prints.

/// Keys whose values are secrets, in `key=value` (connection strings, options, query strings).
const SECRET_KEYS: [&str; 10] = [
    "accountkey",
    "sharedaccesskey",
    "sig",
    "password",
    "sasl.password",
    "azure_storage_account_key",
    "azure_storage_access_key",
    "azure_storage_sas_key",
    "azure_client_secret",
    "access_key",
];

/// Replaces secrets in `text`.
pub fn redact(text: &str) -> String {
    let mut out = redact_userinfo(text);
    for key in SECRET_KEYS {
        out = redact_key(&out, key);
    }
    out
}

/// `scheme://user:password@host` → `scheme://user:***@host`.
fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        out.push_str(&rest[..i + 3]);
        rest = &rest[i + 3..];
        let end = rest.find(|c: char| c.is_whitespace() || c == '/' || c == '"' || c == '\'').unwrap_or(rest.len());
        let authority = &rest[..end];
        if let Some(at) = authority.rfind('@')
            && let Some(colon) = authority[..at].find(':')
        {
            out.push_str(&authority[..colon + 1]);
            out.push_str("***");
            out.push_str(&authority[at..]);
        } else {
            out.push_str(authority);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// `key=value` (case-insensitive key, value up to `;`, `&`, whitespace or a quote) → `key=***`.
fn redact_key(text: &str, key: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let pat = format!("{key}=");
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    let mut search = 0;
    while let Some(pos) = lower[search..].find(&pat) {
        let start = search + pos;
        // Only whole keys: `sig=` must not match inside `xsig=`.
        let boundary =
            start == 0 || !lower.as_bytes()[start - 1].is_ascii_alphanumeric() && lower.as_bytes()[start - 1] != b'_';
        let vstart = start + pat.len();
        if !boundary {
            search = vstart;
            continue;
        }
        let vend = text[vstart..].find([';', '&', ' ', '\n', '"', '\'', ',']).map_or(text.len(), |e| vstart + e);
        out.push_str(&text[last..vstart]);
        out.push_str("***");
        last = vend;
        search = vend.max(vstart);
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn secrets_are_replaced() {
        assert_eq!(redact("mongodb://app:s3cret@db:27017/x"), "mongodb://app:***@db:27017/x");
        assert_eq!(redact("mongodb+srv://u:p%40ss@c.net"), "mongodb+srv://u:***@c.net");
        assert_eq!(redact("mongodb://db:27017"), "mongodb://db:27017");
        let cs = "DefaultEndpointsProtocol=https;AccountName=acc;AccountKey=abc+/==;EndpointSuffix=core.windows.net";
        assert_eq!(
            redact(cs),
            "DefaultEndpointsProtocol=https;AccountName=acc;AccountKey=***;EndpointSuffix=core.windows.net"
        );
        assert_eq!(
            redact("https://a.blob.core.windows.net/c?sv=2022&sig=XyZ%2B&se=1"),
            "https://a.blob.core.windows.net/c?sv=2022&sig=***&se=1"
        );
        assert_eq!(
            redact("Endpoint=sb://ns/;SharedAccessKeyName=k;SharedAccessKey=zzz"),
            "Endpoint=sb://ns/;SharedAccessKeyName=k;SharedAccessKey=***"
        );
        assert_eq!(redact("azure_storage_account_key=AAA bad"), "azure_storage_account_key=*** bad");
        assert_eq!(redact("design=ok"), "design=ok");
    }
}
