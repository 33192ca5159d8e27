//! Kubernetes label selectors as `kubectl -l` and the API's `labelSelector` read them:
//! requirements separated by commas, each `key=value`, `key==value`, `key!=value`,
//! `key in (a,b)`, `key notin (a,b)`, `key` or `!key`. A selector that the API server would
//! refuse (or read differently, e.g. `app=web tier=frontend`, where a comma is missing) is
//! refused at validation, with the requirement that is wrong.

/// Checks a label selector; the error says which requirement is wrong and why.
pub fn check(selector: &str) -> Result<(), String> {
    if selector.trim().is_empty() {
        return Err("is empty".into());
    }
    for requirement in split(selector)? {
        requirement_ok(requirement.trim()).map_err(|e| format!("`{}` {e}", requirement.trim()))?;
    }
    Ok(())
}

/// Splits at the commas that are not inside `( )`.
fn split(selector: &str) -> Result<Vec<&str>, String> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err("has unbalanced parentheses".into());
        }
    }
    if depth != 0 {
        return Err("has unbalanced parentheses".into());
    }
    parts.push(&selector[start..]);
    Ok(parts)
}

fn requirement_ok(r: &str) -> Result<(), String> {
    if let Some(key) = r.strip_prefix('!') {
        return key_ok(key.trim());
    }
    for op in ["!=", "==", "="] {
        if let Some((key, value)) = r.split_once(op) {
            key_ok(key.trim())?;
            return value_ok(value.trim());
        }
    }
    for op in [" notin ", " in "] {
        if let Some((key, values)) = r.split_once(op) {
            key_ok(key.trim())?;
            let values = values.trim();
            let inner = values.strip_prefix('(').and_then(|v| v.strip_suffix(')')).ok_or("needs its values in parentheses, e.g. `tier in (web,api)`")?;
            return inner.split(',').try_for_each(|v| value_ok(v.trim()));
        }
    }
    key_ok(r)
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters.
fn key_ok(key: &str) -> Result<(), String> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            let prefix_ok = !prefix.is_empty() && prefix.len() <= 253 && prefix.split('.').all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
            if !prefix_ok {
                return Err(format!("has a key prefix `{prefix}` that is not a DNS subdomain"));
            }
            name
        }
        None => key,
    };
    if name.is_empty() {
        return Err("has no key".into());
    }
    if !name_ok(name) {
        return Err(format!("has a key `{name}` that is not a label name (at most 63 letters, digits, `-`, `_`, `.`; a letter or digit at each end; a comma between requirements)"));
    }
    Ok(())
}

fn value_ok(value: &str) -> Result<(), String> {
    if value.is_empty() || name_ok(value) {
        Ok(())
    } else {
        Err(format!("has a value `{value}` that is not a label value (at most 63 letters, digits, `-`, `_`, `.`; a letter or digit at each end; a comma between requirements)"))
    }
}

fn name_ok(s: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    s.len() <= 63 && edge(s.chars().next()) && edge(s.chars().last()) && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn the_forms_the_api_accepts_pass() {
        for ok in ["app=nginx", "app==nginx", "app!=nginx", "app=nginx,tier=web", "app = nginx", "tier in (web,api)", "tier notin (web, api)", "app", "!canary", "app.kubernetes.io/name=nginx", "app="] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn typos_are_refused_naming_the_requirement() {
        assert!(check("app=web tier=frontend").unwrap_err().starts_with("`app=web tier=frontend` has a value `web tier=frontend`"));
        assert!(check("app=we$b").unwrap_err().contains("value `we$b`"));
        assert!(check("tier in web").unwrap_err().contains("parentheses"));
        assert!(check("tier in (web").unwrap_err().contains("unbalanced"));
        assert!(check("=nginx").unwrap_err().contains("no key"));
        assert!(check("Bad_Prefix/app=x").unwrap_err().contains("prefix"));
        assert!(check(" ").is_err());
    }
}
