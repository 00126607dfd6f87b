//! The base registries as services of the agencies that own them, for the exchange to serve:
//! each registry is a read-only JSON API over the demo country (find a person's record by
//! national ID, list a household, a person's vehicles, land, tax years, …), described by an
//! OpenAPI 3 document made from the same table the answers come from.

use civitas_store::Db;
use civitas_store::sqlx::{self, Column, Row};
use serde_json::{Map, Value, json};

use crate::RegistryError;

/// What a path parameter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    /// A national ID or resident certificate number.
    NationalId,
    /// A business's unified business number (8 digits).
    Ubn,
    /// A vehicle's plate.
    Plate,
}

/// One read: a path with one parameter, and the query that answers it.
pub(crate) struct Read {
    path: &'static str,
    summary: &'static str,
    key: Key,
    /// `$1` is the parameter.
    pub(crate) sql: &'static str,
    /// A list (possibly empty) rather than one record (404 when missing).
    many: bool,
}

/// A registry served as a service.
pub struct RegistryService {
    /// The agency that owns it (its exchange member code).
    pub agency: &'static str,
    /// Its service code.
    pub code: &'static str,
    /// Its name.
    pub title: &'static str,
    /// Whether its records are about people.
    pub personal: bool,
    pub(crate) reads: &'static [Read],
}

impl RegistryService {
    /// Its exchange identifier in `instance`: the owning agency's `registry` subsystem.
    pub fn service_id(&self, instance: &str) -> String {
        format!("{instance}/GOV/{}/registry/{}", self.agency, self.code)
    }

    /// Whether it has a read at `path` (as its table writes it, `{id}` for the parameter).
    pub fn has_read(&self, path: &str) -> bool {
        self.reads.iter().any(|r| r.path == path)
    }

    /// Its reads about one person, found by national ID: each path (`{id}` for the ID) and
    /// what it gives.
    pub fn person_reads(&self) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
        self.reads
            .iter()
            .filter(|r| r.key == Key::NationalId)
            .map(|r| (r.path, r.summary))
    }
}

/// Every registry the demo country serves.
pub static SERVICES: &[RegistryService] = &[
    RegistryService {
        agency: "HRO",
        code: "population",
        title: "Population and household register",
        personal: true,
        reads: &[
            Read {
                path: "/persons/{id}",
                summary: "A person's record, found by national ID",
                key: Key::NationalId,
                sql: "SELECT p.national_id, p.family_name, p.given_name, p.family_name_latin, p.given_name_latin, p.sex, p.birth_date, p.death_date, p.nationality, h.household_no, p.city_code, p.district_code, p.street_zh, p.street_en FROM persons p LEFT JOIN households h ON h.id = p.household_id WHERE p.national_id = $1",
                many: false,
            },
            Read {
                path: "/persons/{id}/household",
                summary: "Everyone in the person's household, the head first",
                key: Key::NationalId,
                sql: "SELECT m.national_id, m.family_name, m.given_name, m.sex, m.birth_date, CASE WHEN h.head_person_id = m.id THEN 'head' ELSE 'member' END AS role, h.household_no, h.street_zh, h.street_en FROM persons p JOIN households h ON h.id = p.household_id JOIN persons m ON m.household_id = h.id WHERE p.national_id = $1 ORDER BY CASE WHEN h.head_person_id = m.id THEN 0 ELSE 1 END, m.birth_date",
                many: true,
            },
            Read {
                path: "/persons/{id}/children",
                summary: "The person's children, with the relation",
                key: Key::NationalId,
                sql: "SELECT c.national_id, c.family_name, c.given_name, c.sex, c.birth_date, l.relation FROM persons p JOIN parent_links l ON l.parent_id = p.id JOIN persons c ON c.id = l.child_id WHERE p.national_id = $1 ORDER BY c.birth_date",
                many: true,
            },
        ],
    },
    RegistryService {
        agency: "THB",
        code: "vehicles",
        title: "Vehicles and driving licences",
        personal: true,
        reads: &[
            Read {
                path: "/persons/{id}/licences",
                summary: "The person's driving licences",
                key: Key::NationalId,
                sql: "SELECT d.class, d.class_zh, d.licence_no, d.issued, d.expires, d.status FROM persons p JOIN driving_licences d ON d.person_id = p.id WHERE p.national_id = $1 ORDER BY d.class",
                many: true,
            },
            Read {
                path: "/persons/{id}/vehicles",
                summary: "Vehicles the person owns",
                key: Key::NationalId,
                sql: "SELECT v.plate, v.kind, v.make, v.model, v.model_year, v.registered, v.inspection_due FROM persons p JOIN vehicles v ON v.owner_person_id = p.id WHERE p.national_id = $1 ORDER BY v.plate",
                many: true,
            },
            Read {
                path: "/vehicles/{id}",
                summary: "A vehicle, by plate",
                key: Key::Plate,
                sql: "SELECT v.plate, v.kind, v.make, v.model, v.model_year, v.registered, v.inspection_due, b.ubn AS owner_business_ubn FROM vehicles v LEFT JOIN businesses b ON b.id = v.owner_business_id WHERE v.plate = $1",
                many: false,
            },
        ],
    },
    RegistryService {
        agency: "DLA",
        code: "land",
        title: "Land and buildings",
        personal: true,
        reads: &[
            Read {
                path: "/persons/{id}/parcels",
                summary: "Land parcels the person owns",
                key: Key::NationalId,
                sql: "SELECT l.parcel_no, l.city_code, l.district_code, l.section_zh, l.section_en, l.lot_no, l.area_m2, l.zoning, l.value_per_m2 FROM persons p JOIN land_parcels l ON l.owner_person_id = p.id WHERE p.national_id = $1 ORDER BY l.parcel_no",
                many: true,
            },
            Read {
                path: "/persons/{id}/buildings",
                summary: "Buildings the person owns",
                key: Key::NationalId,
                sql: "SELECT b.building_no, l.parcel_no, b.street_zh, b.street_en, b.floor_area_m2, b.main_use, b.year_built FROM persons p JOIN buildings b ON b.owner_person_id = p.id JOIN land_parcels l ON l.id = b.parcel_id WHERE p.national_id = $1 ORDER BY b.building_no",
                many: true,
            },
        ],
    },
    RegistryService {
        agency: "TXA",
        code: "tax",
        title: "Income tax",
        personal: true,
        reads: &[Read {
            path: "/persons/{id}/income-tax",
            summary: "The person's income tax years",
            key: Key::NationalId,
            sql: "SELECT t.tax_year, t.gross_income, t.tax_due, t.tax_paid, t.status FROM persons p JOIN tax_records t ON t.person_id = p.id WHERE p.national_id = $1 ORDER BY t.tax_year DESC",
            many: true,
        }],
    },
    RegistryService {
        agency: "TXA",
        code: "businesses",
        title: "Business register",
        personal: false,
        reads: &[
            Read {
                path: "/businesses/{id}",
                summary: "A business, by unified business number",
                key: Key::Ubn,
                sql: "SELECT ubn, name_zh, name_en, kind, industry_zh, industry_en, city_code, district_code, registered, capital, status FROM businesses WHERE ubn = $1",
                many: false,
            },
            Read {
                path: "/businesses/{id}/representatives",
                summary: "Who represents the business, and as what",
                key: Key::Ubn,
                sql: "SELECT p.family_name, p.given_name, r.role FROM businesses b JOIN business_representatives r ON r.business_id = b.id JOIN persons p ON p.id = r.person_id WHERE b.ubn = $1 ORDER BY r.role",
                many: true,
            },
        ],
    },
    RegistryService {
        agency: "NHIA",
        code: "insurance",
        title: "National health insurance",
        personal: true,
        reads: &[Read {
            path: "/persons/{id}",
            summary: "The person's insurance status and insured unit",
            key: Key::NationalId,
            sql: "SELECT i.status, i.category, i.insured_type, i.unit_name_zh, i.unit_name_en, i.insured_since, pp.national_id AS principal_national_id FROM persons p JOIN health_insurance i ON i.person_id = p.id LEFT JOIN persons pp ON pp.id = i.principal_person_id WHERE p.national_id = $1",
            many: false,
        }],
    },
    RegistryService {
        agency: "MOE",
        code: "education",
        title: "School enrolments",
        personal: true,
        reads: &[Read {
            path: "/persons/{id}/enrolments",
            summary: "The person's school years",
            key: Key::NationalId,
            sql: "SELECT e.school_year, e.level, e.grade, e.school_name_zh, e.school_name_en FROM persons p JOIN school_enrolments e ON e.person_id = p.id WHERE p.national_id = $1 ORDER BY e.school_year DESC",
            many: true,
        }],
    },
    RegistryService {
        agency: "NIA",
        code: "residents",
        title: "Resident certificates of foreign residents",
        personal: true,
        reads: &[Read {
            path: "/persons/{id}/certificate",
            summary: "A foreign resident's certificate and employer",
            key: Key::NationalId,
            sql: "SELECT r.certificate_no, r.purpose, r.issued, r.expires, b.ubn AS employer_ubn FROM persons p JOIN resident_certificates r ON r.person_id = p.id LEFT JOIN businesses b ON b.id = r.employer_business_id WHERE p.national_id = $1",
            many: false,
        }],
    },
];

/// The registry service with this code.
pub fn service(code: &str) -> Option<&'static RegistryService> {
    SERVICES.iter().find(|s| s.code == code)
}

/// What a registry answers.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// 200 with this JSON.
    Found(Value),
    /// 404: no such record, or no such path.
    NotFound(String),
    /// 400: the parameter is malformed.
    BadRequest(String),
}

/// Whether `value` has the shape `key` needs (so a bad one is a clear 400, not a miss).
fn key_ok(key: Key, value: &str) -> bool {
    match key {
        Key::NationalId => civitas_core::NationalId::parse(value).is_ok(),
        Key::Ubn => crate::ubn_is_valid(value),
        Key::Plate => {
            !value.is_empty()
                && value.len() <= 10
                && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        }
    }
}

/// A row as a JSON object, each column by its own type.
fn row_json(row: &civitas_store::sqlx::any::AnyRow) -> Value {
    let mut o = Map::new();
    for (i, col) in row.columns().iter().enumerate() {
        let v = if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
            v.map_or(Value::Null, Value::from)
        } else if let Ok(v) = row.try_get::<Option<f64>, _>(i) {
            v.map_or(Value::Null, Value::from)
        } else {
            row.try_get::<Option<String>, _>(i)
                .ok()
                .flatten()
                .map_or(Value::Null, Value::from)
        };
        o.insert(col.name().to_string(), v);
    }
    Value::Object(o)
}

/// Answers `GET {path}` of the registry service `code`.
pub async fn answer(db: &Db, code: &str, path: &str) -> Result<Answer, RegistryError> {
    let Some(service) = service(code) else {
        return Ok(Answer::NotFound(format!("no registry service {code}")));
    };
    let path = path.trim_end_matches('/');
    for read in service.reads {
        let (prefix, suffix) = read.path.split_once("{id}").unwrap_or((read.path, ""));
        let Some(value) = path
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(suffix))
            .filter(|v| !v.is_empty() && !v.contains('/'))
        else {
            continue;
        };
        let value = value.to_ascii_uppercase();
        let value = value.as_str();
        if !key_ok(read.key, value) {
            return Ok(Answer::BadRequest(format!(
                "{value:?} is not a valid {}",
                match read.key {
                    Key::NationalId => "national ID or resident certificate number",
                    Key::Ubn => "unified business number",
                    Key::Plate => "plate",
                }
            )));
        }
        let mut conn = db.lend().await?;
        let rows = sqlx::query(read.sql)
            .bind(value)
            .fetch_all(&mut *conn)
            .await?;
        if read.many {
            return Ok(Answer::Found(Value::Array(
                rows.iter().map(row_json).collect(),
            )));
        }
        return Ok(match rows.first() {
            Some(r) => Answer::Found(row_json(r)),
            None => Answer::NotFound(format!("no record for {value}")),
        });
    }
    Ok(Answer::NotFound(format!(
        "{code} has no resource at {path}"
    )))
}

/// The OpenAPI 3 document of a registry service.
pub fn openapi(service: &RegistryService) -> Value {
    let mut paths = Map::new();
    for read in service.reads {
        let param = match read.key {
            Key::NationalId => "National ID (or resident certificate number)",
            Key::Ubn => "Unified business number",
            Key::Plate => "Plate",
        };
        paths.insert(
            read.path.to_string(),
            json!({ "get": {
                "summary": read.summary,
                "parameters": [{ "name": "id", "in": "path", "required": true, "description": param, "schema": { "type": "string" } }],
                "responses": {
                    "200": { "description": if read.many { "The records (possibly none)" } else { "The record" },
                             "content": { "application/json": { "schema": { "type": if read.many { "array" } else { "object" } } } } },
                    "400": { "description": "The parameter is malformed" },
                    "404": { "description": "No such record" }
                }
            }}),
        );
    }
    json!({
        "openapi": "3.0.3",
        "info": { "title": service.title, "version": "1" },
        "paths": paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_read_has_one_parameter_and_documents_itself() {
        for s in SERVICES {
            let doc = openapi(s);
            assert_eq!(doc["paths"].as_object().unwrap().len(), s.reads.len());
            for r in s.reads {
                assert_eq!(r.path.matches("{id}").count(), 1, "{}", r.path);
                assert_eq!(r.sql.matches("$1").count(), 1, "{}", r.sql);
            }
        }
    }
}
