//! The registry schema. Portable SQL for SQLite and PostgreSQL; dates are ISO `YYYY-MM-DD`
//! text; ids are assigned by whoever writes the rows.

use civitas_store::{Component, Migration};

/// Version 1: every base registry.
///
/// `households.head_person_id` refers to `persons(id)` but is not declared as a foreign key,
/// because `persons.household_id` refers back to `households(id)` and the rows are written
/// households first.
const V1: &str = r#"
CREATE TABLE cities (
    code TEXT PRIMARY KEY,
    name_zh TEXT NOT NULL,
    name_en TEXT NOT NULL,
    kind TEXT NOT NULL
);
CREATE TABLE districts (
    code TEXT PRIMARY KEY,
    city_code TEXT NOT NULL REFERENCES cities (code),
    name_zh TEXT NOT NULL,
    name_en TEXT NOT NULL
);
CREATE TABLE agencies (
    code TEXT PRIMARY KEY,
    name_zh TEXT NOT NULL,
    name_en TEXT NOT NULL,
    description_zh TEXT NOT NULL,
    description_en TEXT NOT NULL,
    kind TEXT NOT NULL,
    parent_zh TEXT NOT NULL,
    parent_en TEXT NOT NULL,
    website TEXT NOT NULL,
    services_zh TEXT NOT NULL,
    services_en TEXT NOT NULL
);
CREATE TABLE households (
    id BIGINT PRIMARY KEY,
    household_no TEXT NOT NULL,
    head_person_id BIGINT NOT NULL,
    city_code TEXT NOT NULL,
    district_code TEXT NOT NULL,
    street_zh TEXT NOT NULL,
    street_en TEXT NOT NULL
);
CREATE TABLE persons (
    id BIGINT PRIMARY KEY,
    national_id TEXT NOT NULL,
    family_name TEXT NOT NULL,
    given_name TEXT NOT NULL,
    family_name_latin TEXT NOT NULL,
    given_name_latin TEXT NOT NULL,
    sex TEXT NOT NULL,
    birth_date TEXT NOT NULL,
    death_date TEXT,
    nationality TEXT NOT NULL,
    household_id BIGINT REFERENCES households (id),
    email TEXT,
    phone TEXT,
    city_code TEXT NOT NULL,
    district_code TEXT NOT NULL,
    street_zh TEXT NOT NULL,
    street_en TEXT NOT NULL
);
CREATE UNIQUE INDEX persons_national_id ON persons (national_id);
CREATE INDEX persons_household ON persons (household_id);
CREATE TABLE parent_links (
    child_id BIGINT NOT NULL REFERENCES persons (id),
    parent_id BIGINT NOT NULL REFERENCES persons (id),
    relation TEXT NOT NULL,
    PRIMARY KEY (child_id, parent_id)
);
CREATE INDEX parent_links_parent ON parent_links (parent_id);
CREATE TABLE businesses (
    id BIGINT PRIMARY KEY,
    ubn TEXT NOT NULL,
    name_zh TEXT NOT NULL,
    name_en TEXT NOT NULL,
    kind TEXT NOT NULL,
    industry_zh TEXT NOT NULL,
    industry_en TEXT NOT NULL,
    city_code TEXT NOT NULL,
    district_code TEXT NOT NULL,
    registered TEXT NOT NULL,
    capital BIGINT NOT NULL,
    status TEXT NOT NULL
);
CREATE UNIQUE INDEX businesses_ubn ON businesses (ubn);
CREATE TABLE business_representatives (
    business_id BIGINT NOT NULL REFERENCES businesses (id),
    person_id BIGINT NOT NULL REFERENCES persons (id),
    role TEXT NOT NULL,
    PRIMARY KEY (business_id, person_id)
);
CREATE INDEX business_representatives_person ON business_representatives (person_id);
CREATE TABLE resident_certificates (
    person_id BIGINT PRIMARY KEY REFERENCES persons (id),
    certificate_no TEXT NOT NULL,
    purpose TEXT NOT NULL,
    issued TEXT NOT NULL,
    expires TEXT NOT NULL,
    employer_business_id BIGINT REFERENCES businesses (id)
);
CREATE TABLE driving_licences (
    person_id BIGINT NOT NULL REFERENCES persons (id),
    class TEXT NOT NULL,
    licence_no TEXT NOT NULL,
    class_zh TEXT NOT NULL,
    issued TEXT NOT NULL,
    expires TEXT NOT NULL,
    status TEXT NOT NULL,
    PRIMARY KEY (person_id, class)
);
CREATE TABLE vehicles (
    plate TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    owner_person_id BIGINT REFERENCES persons (id),
    owner_business_id BIGINT REFERENCES businesses (id),
    make TEXT NOT NULL,
    model TEXT NOT NULL,
    model_year BIGINT NOT NULL,
    registered TEXT NOT NULL,
    inspection_due TEXT NOT NULL
);
CREATE INDEX vehicles_owner_person ON vehicles (owner_person_id);
CREATE TABLE land_parcels (
    id BIGINT PRIMARY KEY,
    parcel_no TEXT NOT NULL,
    city_code TEXT NOT NULL,
    district_code TEXT NOT NULL,
    section_zh TEXT NOT NULL,
    section_en TEXT NOT NULL,
    lot_no TEXT NOT NULL,
    area_m2 DOUBLE PRECISION NOT NULL,
    zoning TEXT NOT NULL,
    owner_person_id BIGINT REFERENCES persons (id),
    owner_business_id BIGINT REFERENCES businesses (id),
    value_per_m2 BIGINT NOT NULL
);
CREATE UNIQUE INDEX land_parcels_parcel_no ON land_parcels (parcel_no);
CREATE INDEX land_parcels_owner_person ON land_parcels (owner_person_id);
CREATE TABLE buildings (
    id BIGINT PRIMARY KEY,
    building_no TEXT NOT NULL,
    parcel_id BIGINT NOT NULL REFERENCES land_parcels (id),
    city_code TEXT NOT NULL,
    district_code TEXT NOT NULL,
    street_zh TEXT NOT NULL,
    street_en TEXT NOT NULL,
    floor_area_m2 DOUBLE PRECISION NOT NULL,
    main_use TEXT NOT NULL,
    year_built BIGINT NOT NULL,
    owner_person_id BIGINT REFERENCES persons (id),
    owner_business_id BIGINT REFERENCES businesses (id)
);
CREATE INDEX buildings_owner_person ON buildings (owner_person_id);
CREATE INDEX buildings_parcel ON buildings (parcel_id);
CREATE TABLE tax_records (
    person_id BIGINT NOT NULL REFERENCES persons (id),
    tax_year BIGINT NOT NULL,
    gross_income BIGINT NOT NULL,
    tax_due BIGINT NOT NULL,
    tax_paid BIGINT NOT NULL,
    status TEXT NOT NULL,
    PRIMARY KEY (person_id, tax_year)
);
CREATE TABLE health_insurance (
    person_id BIGINT PRIMARY KEY REFERENCES persons (id),
    status TEXT NOT NULL,
    category BIGINT NOT NULL,
    insured_type TEXT NOT NULL,
    principal_person_id BIGINT REFERENCES persons (id),
    unit_business_id BIGINT REFERENCES businesses (id),
    unit_name_zh TEXT,
    unit_name_en TEXT,
    insured_since TEXT NOT NULL
);
CREATE TABLE school_enrolments (
    person_id BIGINT NOT NULL REFERENCES persons (id),
    school_year BIGINT NOT NULL,
    level TEXT NOT NULL,
    grade BIGINT NOT NULL,
    school_name_zh TEXT NOT NULL,
    school_name_en TEXT NOT NULL,
    PRIMARY KEY (person_id, school_year)
);
CREATE TABLE demo_meta (
    id BIGINT PRIMARY KEY,
    generator_version BIGINT NOT NULL,
    seed TEXT NOT NULL,
    people BIGINT NOT NULL,
    as_of TEXT NOT NULL,
    households BIGINT NOT NULL,
    businesses BIGINT NOT NULL,
    agencies BIGINT NOT NULL,
    foreign_residents BIGINT NOT NULL,
    driving_licences BIGINT NOT NULL,
    vehicles BIGINT NOT NULL,
    land_parcels BIGINT NOT NULL,
    buildings BIGINT NOT NULL,
    tax_records BIGINT NOT NULL,
    health_insured BIGINT NOT NULL,
    school_enrolments BIGINT NOT NULL
);
CREATE TABLE demo_people (
    role TEXT PRIMARY KEY,
    person_id BIGINT NOT NULL REFERENCES persons (id),
    note_zh TEXT NOT NULL,
    note_en TEXT NOT NULL
);
"#;

/// The registry component and its migrations.
pub(crate) const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "base registries",
    sql: V1,
}];

/// The registry component.
pub(crate) const REGISTRY: Component = Component {
    name: "registry",
    migrations: MIGRATIONS,
};
