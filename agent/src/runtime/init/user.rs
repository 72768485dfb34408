//! Who the container process runs as: numeric ids, or names looked up in the image's own
//! /etc/passwd and /etc/group (read after pivot_root, so the host's files are never used).

use std::fs;

use nix::unistd::{setgid, setgroups, setuid, Gid, Uid};

use crate::runtime::spec::User;

/// Failures resolving or switching the user.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("user {name:?} is not in the container's /etc/passwd")]
    UnknownUser { name: String },
    #[error("group {name:?} is not in the container's /etc/group")]
    UnknownGroup { name: String },
    #[error("switch to uid {uid} gid {gid}")]
    Switch {
        uid: u32,
        gid: u32,
        #[source]
        source: nix::Error,
    },
}

/// Numeric identity of the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// Resolves `user` against passwd and group file contents (`user`, `user:group`, `uid:gid`).
pub fn resolve(user: &User, passwd: &str, group: &str) -> Result<Ids, UserError> {
    let name = match user {
        User::Id {
            uid,
            gid,
            additional_gids,
        } => {
            return Ok(Ids {
                uid: *uid,
                gid: *gid,
                groups: additional_gids.clone(),
            })
        }
        User::Name(name) => name,
    };
    let (user_part, group_part) = match name.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (name.as_str(), None),
    };
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| {
            f.len() >= 4
                && (f[0] == user_part || (user_part.parse::<u32>().is_ok() && f[2] == user_part))
        });
    let (uid, primary_gid, user_name) = match (entry, user_part.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse().unwrap_or(0),
            f[3].parse().unwrap_or(0),
            Some(f[0].to_string()),
        ),
        (None, Ok(uid)) => (uid, uid, None),
        (None, Err(_)) => {
            return Err(UserError::UnknownUser {
                name: user_part.into(),
            })
        }
    };
    let groups: Vec<Vec<&str>> = group
        .lines()
        .map(|l| l.split(':').collect())
        .filter(|f: &Vec<&str>| f.len() >= 3)
        .collect();
    let gid = match group_part {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| UserError::UnknownGroup { name: g.into() })?,
        },
    };
    let supplementary = user_name
        .map(|n| {
            groups
                .iter()
                .filter(|f| f.get(3).is_some_and(|m| m.split(',').any(|m| m == n)))
                .filter_map(|f| f[2].parse().ok())
                .collect()
        })
        .unwrap_or_default();
    Ok(Ids {
        uid,
        gid,
        groups: supplementary,
    })
}

/// Adds `group_add`'s groups (names in `group`'s contents, or GIDs) to the supplementary
/// groups, each once.
pub fn add_groups(ids: &mut Ids, group_add: &[String], group: &str) -> Result<(), UserError> {
    for name in group_add {
        let gid = match name.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == name)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| UserError::UnknownGroup { name: name.clone() })?,
        };
        if !ids.groups.contains(&gid) {
            ids.groups.push(gid);
        }
    }
    Ok(())
}

/// Reads the container's own account files (missing files mean "no names"): the user, and
/// the groups `group_add` names.
pub fn resolve_in_container(user: &User, group_add: &[String]) -> Result<Ids, UserError> {
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = fs::read_to_string("/etc/group").unwrap_or_default();
    let mut ids = resolve(user, &passwd, &group)?;
    add_groups(&mut ids, group_add, &group)?;
    Ok(ids)
}

/// setgroups, setgid, setuid — in that order, while the process still may.
pub fn switch(ids: &Ids) -> Result<(), UserError> {
    let err = |source| UserError::Switch {
        uid: ids.uid,
        gid: ids.gid,
        source,
    };
    let groups: Vec<Gid> = ids.groups.iter().map(|&g| Gid::from_raw(g)).collect();
    setgroups(&groups).map_err(err)?;
    setgid(Gid::from_raw(ids.gid)).map_err(err)?;
    setuid(Uid::from_raw(ids.uid)).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/false\n";
    const GROUP: &str = "root:x:0:\nwww:x:33:\ngpio:x:997:www,pi\n";

    #[test]
    fn names_resolve_from_the_image_files() {
        let cases = [
            (
                "www",
                Ids {
                    uid: 33,
                    gid: 33,
                    groups: vec![997],
                },
            ),
            (
                "www:gpio",
                Ids {
                    uid: 33,
                    gid: 997,
                    groups: vec![997],
                },
            ),
            (
                "1000:1000",
                Ids {
                    uid: 1000,
                    gid: 1000,
                    groups: vec![],
                },
            ),
            (
                "33",
                Ids {
                    uid: 33,
                    gid: 33,
                    groups: vec![997],
                },
            ),
        ];
        for (name, want) in cases {
            assert_eq!(
                resolve(&User::Name(name.into()), PASSWD, GROUP).unwrap(),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn added_groups_resolve_by_name_or_gid_once() {
        let mut ids = resolve(&User::Name("www".into()), PASSWD, GROUP).unwrap();
        add_groups(
            &mut ids,
            &["gpio".into(), "44".into(), "root".into()],
            GROUP,
        )
        .unwrap();
        assert_eq!(ids.groups, [997, 44, 0]);
        let err = add_groups(&mut ids, &["video".into()], GROUP).unwrap_err();
        assert!(err.to_string().contains("\"video\""), "{err}");
    }

    #[test]
    fn unknown_names_are_errors_naming_them() {
        let err = resolve(&User::Name("nobody".into()), PASSWD, GROUP).unwrap_err();
        assert!(err.to_string().contains("nobody"));
        let err = resolve(&User::Name("www:wheel".into()), PASSWD, GROUP).unwrap_err();
        assert!(err.to_string().contains("wheel"));
    }
}
