//! Resolving the user of a container in the image's /etc/passwd and /etc/group, as Kubernetes
//! defines it: `run_as_username`, else `run_as_user` (+ `run_as_group`), else the image's `User`.

use super::SpecError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub home: Option<String>,
}

struct Passwd<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = Passwd<'_>> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 7 || l.starts_with('#') {
            return None;
        }
        Some(Passwd {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
        })
    })
}

/// (name, gid, members)
fn group_entries(text: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 || l.starts_with('#') {
            return None;
        }
        let members = f[3].split(',').filter(|m| !m.is_empty()).collect();
        Some((f[0], f[2].parse().ok()?, members))
    })
}

fn to_id(v: i64, field: &str) -> Result<u32, SpecError> {
    u32::try_from(v).map_err(|_| SpecError::Invalid(format!("{field} {v} is out of range")))
}

/// What the request and the image say about the user.
#[derive(Debug, Clone, Copy, Default)]
pub struct UserRequest<'a> {
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub run_as_username: &'a str,
    pub supplemental: &'a [i64],
    /// SupplementalGroupsPolicy Strict: the image's /etc/group memberships are not added.
    pub strict: bool,
    /// The image config's `User`.
    pub image_user: &'a str,
}

/// Resolves the container's user. `passwd`/`group` are the image's files (None when absent).
pub fn resolve(
    req: &UserRequest,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<User, SpecError> {
    let UserRequest {
        run_as_user,
        run_as_group,
        run_as_username,
        supplemental,
        strict,
        image_user,
    } = *req;
    let passwd = passwd.unwrap_or("");
    let group = group.unwrap_or("");
    if run_as_group.is_some() && run_as_user.is_none() && run_as_username.is_empty() {
        return Err(SpecError::Invalid(
            "run_as_group is set without run_as_user or run_as_username".into(),
        ));
    }
    let (uid, mut gid, name, home) = if !run_as_username.is_empty() {
        let p = passwd_entries(passwd)
            .find(|p| p.name == run_as_username)
            .ok_or_else(|| {
                SpecError::Invalid(format!(
                    "run_as_username {run_as_username:?} is not in the image's /etc/passwd"
                ))
            })?;
        (
            p.uid,
            p.gid,
            Some(p.name.to_string()),
            Some(p.home.to_string()),
        )
    } else if let Some(u) = run_as_user {
        let uid = to_id(u, "run_as_user")?;
        match passwd_entries(passwd).find(|p| p.uid == uid) {
            Some(p) => (
                uid,
                p.gid,
                Some(p.name.to_string()),
                Some(p.home.to_string()),
            ),
            None => (uid, 0, None, None),
        }
    } else {
        let (u, g) = match image_user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (image_user, None),
        };
        let (uid, gid, name, home) = if u.is_empty() {
            match passwd_entries(passwd).find(|p| p.uid == 0) {
                Some(p) => (0, p.gid, Some(p.name.to_string()), Some(p.home.to_string())),
                None => (0, 0, None, None),
            }
        } else if let Ok(uid) = u.parse::<u32>() {
            match passwd_entries(passwd).find(|p| p.uid == uid) {
                Some(p) => (
                    uid,
                    p.gid,
                    Some(p.name.to_string()),
                    Some(p.home.to_string()),
                ),
                None => (uid, 0, None, None),
            }
        } else {
            let p = passwd_entries(passwd)
                .find(|p| p.name == u)
                .ok_or_else(|| {
                    SpecError::Invalid(format!("the image's user {u:?} is not in its /etc/passwd"))
                })?;
            (
                p.uid,
                p.gid,
                Some(p.name.to_string()),
                Some(p.home.to_string()),
            )
        };
        let gid = match g {
            None | Some("") => gid,
            Some(g) => match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => group_entries(group)
                    .find(|(n, _, _)| *n == g)
                    .map(|(_, id, _)| id)
                    .ok_or_else(|| {
                        SpecError::Invalid(format!(
                            "the image's group {g:?} is not in its /etc/group"
                        ))
                    })?,
            },
        };
        (uid, gid, name, home)
    };
    if let Some(g) = run_as_group {
        gid = to_id(g, "run_as_group")?;
    }
    // The groups the process has, as containerd and CRI-O give them: the primary GID first,
    // then the request's supplemental groups, then (policy Merge) the image's /etc/group
    // memberships of the user. Linear in the size of /etc/group (an image's file may be
    // large): a set of what is in.
    let mut additional = vec![gid];
    let mut seen = std::collections::HashSet::from([gid]);
    for &g in supplemental {
        let g = to_id(g, "supplemental_groups")?;
        if seen.insert(g) {
            additional.push(g);
        }
    }
    if let Some(name) = name.as_ref().filter(|_| !strict) {
        for (_, id, members) in group_entries(group) {
            if members.contains(&name.as_str()) && seen.insert(id) {
                additional.push(id);
            }
        }
    }
    Ok(User {
        uid,
        gid,
        additional_gids: additional,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www:/var/www:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwww-data:x:33:\nweb:x:500:www-data,other\n";

    fn r(
        u: Option<i64>,
        g: Option<i64>,
        name: &str,
        sup: &[i64],
        img: &str,
    ) -> Result<User, SpecError> {
        let req = UserRequest {
            run_as_user: u,
            run_as_group: g,
            run_as_username: name,
            supplemental: sup,
            strict: false,
            image_user: img,
        };
        resolve(&req, Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn image_user_forms() {
        assert_eq!(r(None, None, "", &[], "").unwrap().uid, 0);
        let u = r(None, None, "", &[], "www-data").unwrap();
        assert_eq!(
            (u.uid, u.gid, u.additional_gids.clone()),
            (33, 33, vec![33, 500])
        );
        assert_eq!(u.home.as_deref(), Some("/var/www"));
        let u = r(None, None, "", &[], "1002").unwrap();
        assert_eq!((u.uid, u.gid), (1002, 0));
        let u = r(None, None, "", &[], "33:web").unwrap();
        assert_eq!((u.uid, u.gid), (33, 500));
        let u = r(None, None, "", &[], "1002:7").unwrap();
        assert_eq!((u.uid, u.gid), (1002, 7));
        assert!(r(None, None, "", &[], "nobody").is_err());
        assert!(r(None, None, "", &[], "0:nogroup").is_err());
    }

    #[test]
    fn strict_policy_ignores_the_images_groups() {
        let req = UserRequest {
            supplemental: &[7],
            strict: true,
            image_user: "www-data",
            ..Default::default()
        };
        let u = resolve(&req, Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids), (33, 33, vec![33, 7]));
    }

    #[test]
    fn request_overrides_and_errors() {
        let u = r(Some(33), None, "", &[], "root").unwrap();
        assert_eq!((u.uid, u.gid), (33, 33));
        let u = r(Some(1000), Some(2000), "", &[3000, 3000], "").unwrap();
        assert_eq!(
            (u.uid, u.gid, u.additional_gids),
            (1000, 2000, vec![2000, 3000])
        );
        // The primary GID first, the request's groups, then the image's memberships (Merge).
        let u = r(None, None, "", &[7, 500, 33], "www-data").unwrap();
        assert_eq!(u.additional_gids, vec![33, 7, 500]);
        let u = r(None, Some(5), "www-data", &[], "").unwrap();
        assert_eq!((u.uid, u.gid), (33, 5));
        let e = r(None, Some(5), "", &[], "").unwrap_err().to_string();
        assert!(e.contains("run_as_group"), "{e}");
        let e = r(None, None, "ghost", &[], "").unwrap_err().to_string();
        assert!(e.contains("ghost"), "{e}");
        assert!(r(Some(-1), None, "", &[], "").is_err());
    }
}
