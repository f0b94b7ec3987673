//! A request as the policy's `input`: exactly the JSON upstream kata-agent gives its
//! policy, so that rules written for upstream (genpolicy's `rules.rego`) read ours.
//!
//! Upstream serialises its rust-protobuf messages with serde (`protocols` with
//! `with-serde`): fields under their Rust names (`OCI`, `Process`, `Args`, `type_`,
//! `container_id`), an absent message field as `null`, bytes as arrays of numbers, and
//! enums as their **numbers** (`"family": 0`). Our protocol crate derives the same serde
//! shape except for enums, which it writes by name (cocoon-ctl's JSON is easier to read
//! that way); [`request`] turns the few enum fields of requests back into numbers.
//!
//! CopyFile is special upstream and here: the policy sees a [`PolicyCopyFileRequest`]
//! (the file type decoded from the mode, a symlink's target as text, no data).

use protobuf::{EnumFull, MessageFull};
use serde::Serialize;
use serde_json::Value as Json;

use cocoon_protocols::agent::CopyFileRequest;
use cocoon_protocols::types::{FSGroupChangePolicy, IPFamily};

/// A request could not be turned into the policy's input.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("serialising the request: {0}")]
    Serialise(#[from] serde_json::Error),
    #[error("the symlink target is not UTF-8")]
    SymlinkTarget,
}

/// The rule a request is checked by: its message name (`CreateContainerRequest`).
pub fn rule_name<M: MessageFull>() -> String {
    M::descriptor().name().to_string()
}

/// `req` as the policy's input for rule `name`.
pub fn request<M: Serialize>(name: &str, req: &M) -> Result<Json, InputError> {
    let mut json = serde_json::to_value(req)?;
    enums_as_numbers(name, &mut json);
    Ok(json)
}

/// The enum fields a request can carry, at the paths upstream's rules read them.
fn enums_as_numbers(name: &str, json: &mut Json) {
    match name {
        "UpdateInterfaceRequest" => {
            for a in each(json, &["interface", "IPAddresses"]) {
                to_number::<IPFamily>(a, &["family"]);
            }
        }
        "UpdateRoutesRequest" => {
            for r in each(json, &["routes", "Routes"]) {
                to_number::<IPFamily>(r, &["family"]);
            }
        }
        "AddARPNeighborsRequest" => {
            for n in each(json, &["neighbors", "ARPNeighbors"]) {
                to_number::<IPFamily>(n, &["toIPAddress", "family"]);
            }
        }
        "CreateContainerRequest" | "CreateSandboxRequest" | "UpdateEphemeralMountsRequest" => {
            for s in each(json, &["storages"]) {
                to_number::<FSGroupChangePolicy>(s, &["fs_group", "group_change_policy"]);
            }
        }
        _ => {}
    }
}

/// The value at `path` (object keys), if there is one; never inserts.
fn at<'a>(mut v: &'a mut Json, path: &[&str]) -> Option<&'a mut Json> {
    for key in path {
        v = v.get_mut(*key)?;
    }
    Some(v)
}

/// The elements of the array at `path` (none when there is no array).
fn each<'a>(v: &'a mut Json, path: &[&str]) -> impl Iterator<Item = &'a mut Json> {
    at(v, path)
        .and_then(Json::as_array_mut)
        .into_iter()
        .flatten()
}

/// An enum written by name at `path` becomes its number.
fn to_number<E: EnumFull>(v: &mut Json, path: &[&str]) {
    let Some(v) = at(v, path) else { return };
    if let Some(name) = v.as_str() {
        if let Some(value) = E::enum_descriptor().value_by_name(name) {
            *v = Json::from(value.value());
        }
    }
}

/// What S_IFMT of a CopyFile mode says, as upstream's policy input names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FileType {
    Unknown,
    Regular,
    Directory,
    Symlink,
}

impl FileType {
    pub fn from_mode(mode: u32) -> FileType {
        match mode & libc::S_IFMT {
            libc::S_IFREG => FileType::Regular,
            libc::S_IFDIR => FileType::Directory,
            libc::S_IFLNK => FileType::Symlink,
            _ => FileType::Unknown,
        }
    }
}

/// CopyFile as the policy sees it (upstream's `PolicyCopyFileRequest`): no file data,
/// the type decoded, a symlink's target as a string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyCopyFileRequest {
    pub path: String,
    pub file_type: FileType,
    pub symlink_target: Option<String>,
    pub file_size: i64,
    pub file_mode: u32,
    pub dir_mode: u32,
    pub uid: i32,
    pub gid: i32,
    pub offset: i64,
}

impl TryFrom<&CopyFileRequest> for PolicyCopyFileRequest {
    type Error = InputError;

    fn try_from(req: &CopyFileRequest) -> Result<Self, InputError> {
        let file_type = FileType::from_mode(req.file_mode);
        let symlink_target = match file_type {
            FileType::Symlink => Some(
                std::str::from_utf8(&req.data)
                    .map_err(|_| InputError::SymlinkTarget)?
                    .to_string(),
            ),
            _ => None,
        };
        Ok(PolicyCopyFileRequest {
            path: req.path.clone(),
            file_type,
            symlink_target,
            file_size: req.file_size,
            file_mode: req.file_mode,
            dir_mode: req.dir_mode,
            uid: req.uid,
            gid: req.gid,
            offset: req.offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_protocols::agent::{
        ARPNeighbors, AddARPNeighborsRequest, CreateContainerRequest, FSGroup, Storage,
        UpdateInterfaceRequest, UpdateRoutesRequest,
    };
    use cocoon_protocols::types::{ARPNeighbor, IPAddress, Interface, Route};
    use serde_json::json;

    #[test]
    fn enums_are_numbers_as_upstream() {
        let addr = IPAddress {
            family: IPFamily::v6.into(),
            address: "::1".into(),
            ..Default::default()
        };
        let req = UpdateInterfaceRequest {
            interface: Some(Interface {
                IPAddresses: vec![addr.clone()],
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        let v = request("UpdateInterfaceRequest", &req).unwrap();
        assert_eq!(v["interface"]["IPAddresses"][0]["family"], json!(1));
        assert_eq!(v["interface"]["type_"], json!(""));

        let req = UpdateRoutesRequest {
            routes: Some(cocoon_protocols::agent::Routes {
                Routes: vec![Route {
                    family: IPFamily::v6.into(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        let v = request("UpdateRoutesRequest", &req).unwrap();
        assert_eq!(v["routes"]["Routes"][0]["family"], json!(1));

        let req = AddARPNeighborsRequest {
            neighbors: Some(ARPNeighbors {
                ARPNeighbors: vec![ARPNeighbor {
                    toIPAddress: Some(addr).into(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        let v = request("AddARPNeighborsRequest", &req).unwrap();
        assert_eq!(
            v["neighbors"]["ARPNeighbors"][0]["toIPAddress"]["family"],
            json!(1)
        );

        let req = CreateContainerRequest {
            storages: vec![
                Storage {
                    fs_group: Some(FSGroup {
                        group_id: 5,
                        group_change_policy: FSGroupChangePolicy::OnRootMismatch.into(),
                        ..Default::default()
                    })
                    .into(),
                    ..Default::default()
                },
                Storage::default(),
            ],
            ..Default::default()
        };
        let v = request("CreateContainerRequest", &req).unwrap();
        assert_eq!(
            v["storages"][0]["fs_group"]["group_change_policy"],
            json!(1)
        );
        assert_eq!(v["storages"][1]["fs_group"], Json::Null);
        // Absent message fields are null, as upstream's serde helpers write them.
        assert_eq!(v["OCI"], Json::Null);
        assert_eq!(v["string_user"], Json::Null);
    }

    #[test]
    fn copy_file_shape() {
        let mut req = CopyFileRequest {
            path: "/run/kata-containers/shared/containers/x".into(),
            file_mode: libc::S_IFLNK | 0o777,
            data: b"..data/key".to_vec(),
            ..Default::default()
        };
        let p = PolicyCopyFileRequest::try_from(&req).unwrap();
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!({
                "path": "/run/kata-containers/shared/containers/x",
                "file_type": "Symlink",
                "symlink_target": "..data/key",
                "file_size": 0, "file_mode": libc::S_IFLNK | 0o777, "dir_mode": 0,
                "uid": 0, "gid": 0, "offset": 0
            })
        );
        for (mode, t) in [
            (libc::S_IFREG | 0o644, FileType::Regular),
            (libc::S_IFDIR | 0o755, FileType::Directory),
            (libc::S_IFSOCK, FileType::Unknown),
            (libc::S_IFDIR | libc::S_IFREG, FileType::Unknown),
            (0, FileType::Unknown),
        ] {
            req.file_mode = mode;
            let p = PolicyCopyFileRequest::try_from(&req).unwrap();
            assert_eq!((p.file_type, p.symlink_target), (t, None), "{mode:o}");
        }
        req.file_mode = libc::S_IFLNK;
        req.data = vec![0, 0xff];
        assert!(PolicyCopyFileRequest::try_from(&req).is_err());
    }
}
