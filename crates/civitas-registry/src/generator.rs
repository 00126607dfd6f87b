//! The demo-country generator: whole households, their people and everything the base
//! registries hold about them, produced in blocks of people so that memory stays bounded
//! whatever the size of the country.
//!
//! Everything is a pure function of `(seed, people, as_of)`: each block draws from its own
//! random stream, and the counters that make identifiers unique (national ID serials per
//! region, plates, parcel numbers) advance in generation order.

use civitas_core::national_id::{Holder, NationalId, Sex};
use time::Date;

use crate::catalog::{self, Group, Line};
use crate::dates::{add_months, add_years, age_on, from_ymd, iso, jd, push_num, ymd};
use crate::names::{self, NATIONALITIES, SURNAMES, Syllable};
use crate::places::{CITIES, City, District, SECTION_ZH, UNIVERSITIES};
use crate::rng::{Rng, Weights};
use crate::ubn::ubn_from_prefix;
use civitas_store::{BulkInsert, Value};

/// Bump when a change alters the generated data for an existing spec.
pub(crate) const GENERATOR_VERSION: i64 = 1;

/// The most people a demo country may hold (Taiwan has about 23 million).
pub(crate) const MAX_PEOPLE: u64 = 30_000_000;
/// The fewest people a demo country may hold: the featured people need a few households.
pub(crate) const MIN_PEOPLE: u64 = 100;

/// A multiplier coprime to every modulus used below, so `i * MUL + offset` is a bijection.
const MUL: u64 = 7_654_321;

/// The featured people every demo relies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Baby,
    LicenceExpiring,
    Child55,
    ForeignProfessional,
    PropertySeller,
    PropertyBuyer,
    ElderlyAlone,
}

impl Role {
    pub(crate) fn code(self) -> &'static str {
        match self {
            Role::Baby => "baby_born_last_week",
            Role::LicenceExpiring => "licence_expiring_next_month",
            Role::Child55 => "child_turning_5_5",
            Role::ForeignProfessional => "foreign_professional",
            Role::PropertySeller => "property_seller",
            Role::PropertyBuyer => "property_buyer",
            Role::ElderlyAlone => "elderly_living_alone",
        }
    }
}

/// Why a foreign resident is in the country.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Foreign {
    Migrant,
    Professional,
    Student,
    Spouse,
}

/// What an adult does for a living.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Occ {
    Child,
    Student,
    Employee(i64),
    Owner(i64),
    Farmer,
    Union(u8),
    Homemaker,
    Unemployed,
    Retired,
}

/// One address line, shared by everyone living there.
struct Addr {
    city: usize,
    district: usize,
    zh: String,
    en: String,
}

/// A person being generated.
struct P {
    id: i64,
    nid: String,
    male: bool,
    birth: i32,
    nat: &'static str,
    family: &'static str,
    given: String,
    family_latin: &'static str,
    given_latin: String,
    hh: Option<usize>,
    addr: usize,
    father: Option<usize>,
    mother: Option<usize>,
    spouse: Option<usize>,
    /// For a grandparent: the adult child they live with.
    carer: Option<usize>,
    foreign: Option<Foreign>,
    /// First arrival in Taiwan, for foreign residents.
    arrived: i32,
    occ: Occ,
    income: i64,
    featured: Option<Role>,
    /// Part of a featured story: never made a business owner, employed when of working age.
    keep: bool,
    car: bool,
    moto: bool,
    /// National Health Insurance: category, or 0 when not insured.
    nhi_cat: i64,
    nhi_unit_business: Option<i64>,
}

/// A household being generated.
struct H {
    id: i64,
    no: String,
    addr: usize,
    head: usize,
    members: Vec<usize>,
}

/// A business generated in this block.
struct B {
    id: i64,
    name_zh: String,
    name_en: String,
    kind: &'static str,
    industry: (&'static str, &'static str),
    city: usize,
    district: usize,
    group: Group,
}

/// Everything generated for one block before it becomes rows.
#[derive(Default)]
struct Block {
    persons: Vec<P>,
    households: Vec<H>,
    addrs: Vec<Addr>,
    businesses: Vec<B>,
    /// Business id, person index, role.
    reps: Vec<(i64, usize, &'static str)>,
    featured: Vec<(Role, usize)>,
    /// Details for the featured people's notes: parcel number, building number, licence
    /// expiry, certificate expiry.
    seller_property: Option<(String, String)>,
    foreign_employer: Option<i64>,
    cert_expiry: Option<i32>,
}

/// The rows of every registry table, buffered between flushes.
pub(crate) struct Rows {
    pub(crate) households: BulkInsert,
    pub(crate) persons: BulkInsert,
    pub(crate) businesses: BulkInsert,
    pub(crate) reps: BulkInsert,
    pub(crate) parent_links: BulkInsert,
    pub(crate) certificates: BulkInsert,
    pub(crate) licences: BulkInsert,
    pub(crate) vehicles: BulkInsert,
    pub(crate) parcels: BulkInsert,
    pub(crate) buildings: BulkInsert,
    pub(crate) taxes: BulkInsert,
    pub(crate) insurance: BulkInsert,
    pub(crate) schools: BulkInsert,
    pub(crate) demo_people: BulkInsert,
}

impl Rows {
    pub(crate) fn new() -> Rows {
        Rows {
            households: BulkInsert::new(
                "households",
                &[
                    "id",
                    "household_no",
                    "head_person_id",
                    "city_code",
                    "district_code",
                    "street_zh",
                    "street_en",
                ],
            ),
            persons: BulkInsert::new(
                "persons",
                &[
                    "id",
                    "national_id",
                    "family_name",
                    "given_name",
                    "family_name_latin",
                    "given_name_latin",
                    "sex",
                    "birth_date",
                    "death_date",
                    "nationality",
                    "household_id",
                    "email",
                    "phone",
                    "city_code",
                    "district_code",
                    "street_zh",
                    "street_en",
                ],
            ),
            businesses: BulkInsert::new(
                "businesses",
                &[
                    "id",
                    "ubn",
                    "name_zh",
                    "name_en",
                    "kind",
                    "industry_zh",
                    "industry_en",
                    "city_code",
                    "district_code",
                    "registered",
                    "capital",
                    "status",
                ],
            ),
            reps: BulkInsert::new(
                "business_representatives",
                &["business_id", "person_id", "role"],
            ),
            parent_links: BulkInsert::new("parent_links", &["child_id", "parent_id", "relation"]),
            certificates: BulkInsert::new(
                "resident_certificates",
                &[
                    "person_id",
                    "certificate_no",
                    "purpose",
                    "issued",
                    "expires",
                    "employer_business_id",
                ],
            ),
            licences: BulkInsert::new(
                "driving_licences",
                &[
                    "person_id",
                    "class",
                    "licence_no",
                    "class_zh",
                    "issued",
                    "expires",
                    "status",
                ],
            ),
            vehicles: BulkInsert::new(
                "vehicles",
                &[
                    "plate",
                    "kind",
                    "owner_person_id",
                    "owner_business_id",
                    "make",
                    "model",
                    "model_year",
                    "registered",
                    "inspection_due",
                ],
            ),
            parcels: BulkInsert::new(
                "land_parcels",
                &[
                    "id",
                    "parcel_no",
                    "city_code",
                    "district_code",
                    "section_zh",
                    "section_en",
                    "lot_no",
                    "area_m2",
                    "zoning",
                    "owner_person_id",
                    "owner_business_id",
                    "value_per_m2",
                ],
            ),
            buildings: BulkInsert::new(
                "buildings",
                &[
                    "id",
                    "building_no",
                    "parcel_id",
                    "city_code",
                    "district_code",
                    "street_zh",
                    "street_en",
                    "floor_area_m2",
                    "main_use",
                    "year_built",
                    "owner_person_id",
                    "owner_business_id",
                ],
            ),
            taxes: BulkInsert::new(
                "tax_records",
                &[
                    "person_id",
                    "tax_year",
                    "gross_income",
                    "tax_due",
                    "tax_paid",
                    "status",
                ],
            ),
            insurance: BulkInsert::new(
                "health_insurance",
                &[
                    "person_id",
                    "status",
                    "category",
                    "insured_type",
                    "principal_person_id",
                    "unit_business_id",
                    "unit_name_zh",
                    "unit_name_en",
                    "insured_since",
                ],
            ),
            schools: BulkInsert::new(
                "school_enrolments",
                &[
                    "person_id",
                    "school_year",
                    "level",
                    "grade",
                    "school_name_zh",
                    "school_name_en",
                ],
            ),
            demo_people: BulkInsert::new(
                "demo_people",
                &["role", "person_id", "note_zh", "note_en"],
            ),
        }
    }

    /// Every batch, in an order that satisfies the foreign keys.
    pub(crate) fn in_order(&mut self) -> [&mut BulkInsert; 14] {
        [
            &mut self.households,
            &mut self.persons,
            &mut self.businesses,
            &mut self.reps,
            &mut self.parent_links,
            &mut self.certificates,
            &mut self.licences,
            &mut self.vehicles,
            &mut self.parcels,
            &mut self.buildings,
            &mut self.taxes,
            &mut self.insurance,
            &mut self.schools,
            &mut self.demo_people,
        ]
    }
}

/// Recently created businesses, by city and employer group, to draw employers from.
#[derive(Clone, Default)]
struct Ring {
    ids: Vec<i64>,
    next: usize,
}

const RING: usize = 64;

impl Ring {
    fn push(&mut self, id: i64) {
        if self.ids.len() < RING {
            self.ids.push(id);
        } else {
            self.ids[self.next] = id;
            self.next = (self.next + 1) % RING;
        }
    }
    fn pick(&self, rng: &mut Rng) -> Option<i64> {
        (!self.ids.is_empty()).then(|| *rng.pick(&self.ids))
    }
}

/// Weight tables built once.
struct Tables {
    cities: Weights,
    districts: Vec<Weights>,
    surnames: Weights,
    migrant_nat: Weights,
    professional_nat: Weights,
    student_nat: Weights,
    spouse_nat: Weights,
    cars: Weights,
    motorcycles: Weights,
    trucks: Weights,
    universities: Weights,
    company_lines: Weights,
    shop_lines: Weights,
    /// Global index of each city's first district.
    district_base: Vec<usize>,
    city_codes: Vec<String>,
    district_codes: Vec<String>,
}

fn weights_of(codes: &[&str], w: &[u64]) -> Weights {
    Weights::new(
        NATIONALITIES
            .iter()
            .map(|n| codes.iter().position(|c| *c == n.code).map_or(0, |i| w[i])),
    )
}

impl Tables {
    fn new() -> Tables {
        let mut district_base = Vec::new();
        let mut district_codes = Vec::new();
        for c in CITIES {
            district_base.push(district_codes.len());
            for i in 0..c.districts.len() {
                let mut code = String::from(c.letter);
                push_num(&mut code, i as u32 + 1, 2);
                district_codes.push(code);
            }
        }
        Tables {
            cities: Weights::new(CITIES.iter().map(|c| u64::from(c.weight))),
            districts: CITIES
                .iter()
                .map(|c| Weights::new(c.districts.iter().map(|d| u64::from(d.weight))))
                .collect(),
            surnames: Weights::new(SURNAMES.iter().map(|s| u64::from(s.2))),
            migrant_nat: weights_of(&["VN", "ID", "PH", "TH"], &[40, 32, 20, 8]),
            professional_nat: weights_of(
                &["JP", "US", "IN", "GB", "DE", "FR"],
                &[30, 25, 15, 10, 10, 10],
            ),
            student_nat: weights_of(
                &["VN", "ID", "JP", "US", "IN", "FR", "DE", "GB", "PH", "TH"],
                &[25, 25, 15, 10, 15, 2, 2, 2, 2, 2],
            ),
            spouse_nat: weights_of(&["VN", "ID", "PH", "TH"], &[60, 20, 10, 10]),
            cars: Weights::new(catalog::CARS.iter().map(|m| u64::from(m.2))),
            motorcycles: Weights::new(catalog::MOTORCYCLES.iter().map(|m| u64::from(m.2))),
            trucks: Weights::new(catalog::TRUCKS.iter().map(|m| u64::from(m.2))),
            universities: Weights::new(UNIVERSITIES.iter().map(|u| u64::from(u.2))),
            company_lines: Weights::new(catalog::COMPANY_LINES.iter().map(|l| u64::from(l.weight))),
            shop_lines: Weights::new(catalog::SHOP_LINES.iter().map(|l| u64::from(l.weight))),
            district_base,
            city_codes: CITIES.iter().map(|c| String::from(c.letter)).collect(),
            district_codes,
        }
    }
}

/// Counts of what has been generated.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counts {
    pub(crate) people: u64,
    pub(crate) households: u64,
    pub(crate) businesses: u64,
}

/// The generator's state between blocks.
pub(crate) struct Generator {
    seed: u64,
    people: u64,
    today: i32,
    block_size: u64,
    next_block: u64,
    counts: Counts,
    next_person: i64,
    next_household: i64,
    next_business: i64,
    next_parcel: i64,
    next_building: i64,
    nid_serials: Vec<u32>,
    nid_offsets: Vec<u32>,
    household_serials: Vec<u32>,
    cars: u64,
    motorcycles: u64,
    plate_offset: u64,
    ubn_offset: u64,
    parcel_serials: Vec<u32>,
    building_serials: Vec<u32>,
    rings: Vec<[Ring; 3]>,
    any_ring: [Ring; 3],
    tax_years: [i32; 3],
    school_year: i32,
    t: Tables,
}

/// How many people each block holds for a country of `people`: about 1% of it, between
/// 100 and 10,000.
pub(crate) fn block_size(people: u64) -> u64 {
    people.div_ceil(100).clamp(100, 10_000)
}

impl Generator {
    pub(crate) fn new(seed: u64, people: u64, as_of: Date) -> Generator {
        let today = jd(as_of);
        let mut r = Rng::new(seed, u64::MAX);
        let nid_offsets = (0..26 * 2).map(|_| r.below(10_000_000) as u32).collect();
        let plate_offset = r.next_u64();
        let ubn_offset = r.below(10_000_000);
        let (y, m, _) = ymd(today);
        // Income tax for year Y is filed in May of Y+1; the three latest years whose
        // filing season has closed are on record.
        let last = if m >= 6 { y - 1 } else { y - 2 };
        let t = Tables::new();
        let districts = t.district_codes.len();
        Generator {
            seed,
            people,
            today,
            block_size: block_size(people),
            next_block: 0,
            counts: Counts::default(),
            next_person: 1,
            next_household: 1,
            next_business: 1,
            next_parcel: 1,
            next_building: 1,
            nid_serials: vec![0; 26 * 2],
            nid_offsets,
            household_serials: vec![0; 26],
            cars: 0,
            motorcycles: 0,
            plate_offset,
            ubn_offset,
            parcel_serials: vec![0; districts],
            building_serials: vec![0; districts],
            rings: vec![Default::default(); CITIES.len()],
            any_ring: Default::default(),
            tax_years: [last - 2, last - 1, last],
            school_year: if m >= 8 { y } else { y - 1 },
            t,
        }
    }

    /// What has been generated so far.
    pub(crate) fn counts(&self) -> Counts {
        self.counts
    }

    /// Generates the next block into `rows`; returns how many people it held, or `None`
    /// when the country is complete.
    pub(crate) fn next_block(&mut self, rows: &mut Rows) -> Option<u64> {
        let done = self.counts.people;
        if done >= self.people {
            return None;
        }
        let size = self.block_size.min(self.people - done) as usize;
        let index = self.next_block;
        self.next_block += 1;
        let mut rng = Rng::new(self.seed, index);
        let mut b = Block::default();
        if index == 0 {
            self.featured(&mut rng, &mut b);
        }
        while b.persons.len() < size {
            let room = size - b.persons.len();
            self.unit(&mut rng, &mut b, room);
        }
        let businesses = (done + size as u64) / 40 - done / 40;
        self.businesses(
            &mut rng,
            &mut b,
            businesses.max(u64::from(index == 0)) as usize,
        );
        self.occupations(&mut rng, &mut b);
        self.emit_people(&mut rng, &mut b, rows);
        self.emit_businesses(&mut rng, &b, rows);
        self.emit_certificates(&mut rng, &mut b, rows);
        self.emit_licences_and_vehicles(&mut rng, &mut b, rows);
        self.emit_property(&mut rng, &mut b, rows);
        self.emit_taxes(&mut rng, &b, rows);
        self.emit_insurance(&mut rng, &mut b, rows);
        self.emit_schools(&mut rng, &b, rows);
        self.emit_featured(&b, rows);
        self.counts.people += size as u64;
        self.counts.households += b.households.len() as u64;
        self.counts.businesses += b.businesses.len() as u64;
        Some(size as u64)
    }

    // ----- places and people -------------------------------------------------------------

    fn city(&self, i: usize) -> &'static City {
        &CITIES[i]
    }

    fn district(&self, city: usize, d: usize) -> &'static District {
        &CITIES[city].districts[d]
    }

    fn place(&self, rng: &mut Rng) -> (usize, usize) {
        let c = self.t.cities.pick(rng);
        (c, self.t.districts[c].pick(rng))
    }

    /// A new street address in a district.
    fn addr(&self, rng: &mut Rng, b: &mut Block, city: usize, district: usize) -> usize {
        let c = self.city(city);
        let d = self.district(city, district);
        let (sz, se, lo, hi) = *rng.pick(d.streets);
        let mut zh = String::with_capacity(40);
        let mut en = String::with_capacity(48);
        zh.push_str(sz);
        let section = if hi > 0 {
            rng.range(i64::from(lo), i64::from(hi)) as usize
        } else {
            0
        };
        if section > 0 {
            zh.push_str(SECTION_ZH[section]);
            zh.push('段');
        }
        let lane = if rng.chance(0.35) {
            rng.range(1, if c.urban() { 300 } else { 120 })
        } else {
            0
        };
        if lane > 0 {
            push_num(&mut zh, lane as u32, 1);
            zh.push('巷');
        }
        let number = rng.range(1, if lane > 0 { 80 } else { 400 });
        push_num(&mut zh, number as u32, 1);
        zh.push('號');
        let floors = if c.urban() { 14 } else { 4 };
        let floor = if c.urban() || rng.chance(0.5) {
            rng.quantile(&[(0.0, 1.0), (0.7, 7.0), (1.0, f64::from(floors) + 0.99)]) as i64
        } else {
            0
        };
        if floor > 0 {
            push_num(&mut zh, floor as u32, 1);
            zh.push('樓');
            push_num(&mut en, floor as u32, 1);
            en.push_str("F., ");
        }
        en.push_str("No. ");
        push_num(&mut en, number as u32, 1);
        if lane > 0 {
            en.push_str(", Ln. ");
            push_num(&mut en, lane as u32, 1);
        }
        if section > 0 {
            en.push_str(", Sec. ");
            push_num(&mut en, section as u32, 1);
        }
        en.push_str(", ");
        en.push_str(se);
        b.addrs.push(Addr {
            city,
            district,
            zh,
            en,
        });
        b.addrs.len() - 1
    }

    /// A birth date for someone who is `age` today (at least 30 days old for babies).
    fn birth_for_age(&self, rng: &mut Rng, age: i64) -> i32 {
        let anniversary = add_years(self.today, -(age as i32));
        let back = if age == 0 {
            rng.range(30, 364)
        } else {
            rng.range(1, 364)
        };
        anniversary - back as i32
    }

    fn national_id(&mut self, letter: char, holder: Holder, male: bool) -> String {
        let sex = if male { Sex::Male } else { Sex::Female };
        let slot =
            (letter as usize - 'A' as usize) * 2 + usize::from(holder == Holder::ForeignResident);
        let n = u64::from(self.nid_serials[slot]);
        self.nid_serials[slot] += 1;
        let serial = ((n * MUL + u64::from(self.nid_offsets[slot])) % 10_000_000) as u32;
        // Serials are a bijection of a per-slot counter, and MAX_PEOPLE keeps every counter
        // below 10,000,000 (the largest city holds under a fifth of the people), so serials
        // are unique and compose cannot fail here.
        NationalId::compose(letter, holder, sex, serial)
            .map(|id| id.as_str().to_string())
            .unwrap_or_default()
    }

    fn given_name(&self, rng: &mut Rng, male: bool, birth: i32) -> (String, String) {
        let (year, _, _) = ymd(birth);
        let mut era = if year < 1975 {
            0
        } else if year < 1995 {
            1
        } else {
            2
        };
        if rng.chance(0.2) {
            era = if era == 0 || (era == 1 && rng.chance(0.5)) {
                era + 1
            } else {
                era - 1
            };
        }
        let list: &[Syllable] = match (male, era) {
            (true, 0) => names::MALE_OLD,
            (true, 1) => names::MALE_MID,
            (true, _) => names::MALE_NEW,
            (false, 0) => names::FEMALE_OLD,
            (false, 1) => names::FEMALE_MID,
            (false, _) => names::FEMALE_NEW,
        };
        let a = rng.below(list.len() as u64) as usize;
        let mut c = rng.below(list.len() as u64 - 1) as usize;
        if c >= a {
            c += 1;
        }
        let (za, la) = list[a];
        let (zc, lc) = list[c];
        (format!("{za}{zc}"), format!("{la}-{lc}"))
    }

    /// Adds a person living at `addr`; `surname` is an index into [`SURNAMES`] for
    /// citizens, `nat` an index into [`NATIONALITIES`] for foreign residents.
    #[allow(clippy::too_many_arguments)]
    fn person(
        &mut self,
        rng: &mut Rng,
        b: &mut Block,
        male: bool,
        birth: i32,
        surname: Option<usize>,
        foreign: Option<(Foreign, usize)>,
        addr: usize,
        hh: Option<usize>,
    ) -> usize {
        let id = self.next_person;
        self.next_person += 1;
        let letter = self.city(b.addrs[addr].city).letter;
        let (nat, family, given, family_latin, given_latin, holder) = match foreign {
            None => {
                let s = surname.unwrap_or_else(|| self.t.surnames.pick(rng));
                let (g, gl) = self.given_name(rng, male, birth);
                ("TW", SURNAMES[s].0, g, SURNAMES[s].1, gl, Holder::Citizen)
            }
            Some((_, n)) => {
                let n = &NATIONALITIES[n];
                let f = *rng.pick(n.families);
                let g = *rng.pick(if male { n.male } else { n.female });
                (
                    n.code,
                    f,
                    g.to_string(),
                    f,
                    g.to_string(),
                    Holder::ForeignResident,
                )
            }
        };
        let nid = self.national_id(letter, holder, male);
        let arrived = match foreign {
            None => birth,
            Some((kind, _)) => {
                let adult = add_years(birth, 18);
                let back = match kind {
                    Foreign::Migrant => rng.range(30, 9 * 365),
                    Foreign::Professional => rng.range(60, 12 * 365),
                    Foreign::Student => rng.range(30, 4 * 365),
                    Foreign::Spouse => rng.range(365, 20 * 365),
                };
                (self.today - back as i32).max(adult).min(self.today - 30)
            }
        };
        b.persons.push(P {
            id,
            nid,
            male,
            birth,
            nat,
            family,
            given,
            family_latin,
            given_latin,
            hh,
            addr,
            father: None,
            mother: None,
            spouse: None,
            carer: None,
            foreign: foreign.map(|f| f.0),
            arrived,
            occ: Occ::Child,
            income: 0,
            featured: None,
            keep: false,
            car: false,
            moto: false,
            nhi_cat: 0,
            nhi_unit_business: None,
        });
        let i = b.persons.len() - 1;
        if let Some(h) = hh {
            b.households[h].members.push(i);
        }
        i
    }

    fn household(&mut self, b: &mut Block, addr: usize) -> usize {
        let letter = self.city(b.addrs[addr].city).letter;
        let slot = letter as usize - 'A' as usize;
        let serial = self.household_serials[slot];
        self.household_serials[slot] += 1;
        let mut no = String::from(letter);
        push_num(&mut no, serial + 1, 7);
        b.households.push(H {
            id: self.next_household,
            no,
            addr,
            head: usize::MAX,
            members: Vec::new(),
        });
        self.next_household += 1;
        b.households.len() - 1
    }

    /// One household or one foreign resident living outside a household, of at most
    /// `room` people.
    fn unit(&mut self, rng: &mut Rng, b: &mut Block, room: usize) {
        if rng.chance(0.058) {
            let kind = match rng.below(100) {
                0..70 => Foreign::Migrant,
                70..88 => Foreign::Professional,
                _ => Foreign::Student,
            };
            self.foreign_single(rng, b, kind, None);
            return;
        }
        let (city, district) = self.place(rng);
        let kind = rng.below(100);
        let mut f = Family::default();
        match kind {
            // One person: young, middle-aged or old.
            0..31 => {
                let age =
                    rng.quantile(&[(0.0, 20.0), (0.40, 39.0), (0.72, 64.0), (1.0, 96.0)]) as i64;
                let male = rng.chance(if age > 75 { 0.4 } else { 0.52 });
                let addr = self.addr(rng, b, city, district);
                let h = self.household(b, addr);
                let birth = self.birth_for_age(rng, age);
                let p = self.person(rng, b, male, birth, None, None, addr, Some(h));
                b.households[h].head = p;
                return;
            }
            // A couple without children at home.
            31..52 => {
                let wife = if rng.chance(0.3) {
                    rng.range(24, 38)
                } else {
                    rng.range(52, 90)
                };
                f.mother = Some(wife);
                f.father = Some((wife + rng.range(-2, 6)).clamp(22, 98));
            }
            // Parents and children; one parent and children; three generations.
            _ => {
                let kids = match rng.below(100) {
                    0..40 => 1,
                    40..85 => 2,
                    _ => 3,
                };
                let eldest = rng.quantile(&[(0.0, 0.0), (0.4, 13.0), (1.0, 33.0)]) as i64;
                let at_first =
                    rng.quantile(&[(0.0, 21.0), (0.2, 27.0), (0.8, 34.0), (1.0, 41.0)]) as i64;
                let mother = eldest + at_first;
                let mut age = eldest;
                for k in 0..kids {
                    if k > 0 {
                        age -= rng.range(1, 4);
                    }
                    if age < 0 {
                        break;
                    }
                    f.kids.push(age);
                }
                let single_parent = (80..89).contains(&kind);
                if single_parent {
                    if rng.chance(0.75) {
                        f.mother = Some(mother);
                    } else {
                        f.father = Some((mother + rng.range(-1, 5)).max(eldest + 20));
                    }
                } else {
                    f.mother = Some(mother);
                    f.father = Some((mother + rng.range(-2, 6)).max(eldest + 20).min(98));
                }
                if kind >= 89 {
                    f.father_side = rng.chance(0.8);
                    let parent = if f.father_side { f.father } else { f.mother }.unwrap_or(mother);
                    let grandma = parent + rng.range(22, 34);
                    if grandma <= 100 {
                        let both = rng.chance(0.6) && grandma <= 92;
                        if both || rng.chance(0.75) {
                            f.grandma = Some(grandma);
                        }
                        if both || f.grandma.is_none() {
                            f.grandpa = Some((grandma + rng.range(0, 5)).min(100));
                        }
                    }
                }
            }
        }
        // A few wives (mostly under 55, as marriage migration took off in the 1990s) are
        // foreign residents.
        if f.father.is_some() && f.mother.is_some_and(|m| m <= 55) && rng.chance(0.015) {
            f.foreign_wife = Some(self.t.spouse_nat.pick(rng));
        }
        // Trim to the room left in the block: children first, then grandparents.
        while f.size() > room && !f.kids.is_empty() {
            f.kids.pop();
        }
        if f.size() > room {
            f.grandma = None;
            f.grandpa = None;
        }
        if f.size() > room {
            f.father = None;
            f.foreign_wife = None;
        }
        let addr = self.addr(rng, b, city, district);
        let births = self.births(rng, &f);
        self.family(rng, b, addr, &f, &births);
    }

    fn births(&self, rng: &mut Rng, f: &Family) -> FamilyBirths {
        FamilyBirths {
            father: f.father.map(|a| self.birth_for_age(rng, a)),
            mother: f.mother.map(|a| self.birth_for_age(rng, a)),
            kids: f.kids.iter().map(|&a| self.birth_for_age(rng, a)).collect(),
            grandpa: f.grandpa.map(|a| self.birth_for_age(rng, a)),
            grandma: f.grandma.map(|a| self.birth_for_age(rng, a)),
        }
    }

    /// Creates a family household; returns it and the members as (father, mother, kids).
    fn family(
        &mut self,
        rng: &mut Rng,
        b: &mut Block,
        addr: usize,
        f: &Family,
        births: &FamilyBirths,
    ) -> (usize, Option<usize>, Option<usize>, Vec<usize>) {
        let h = self.household(b, addr);
        let father_surname = self.t.surnames.pick(rng);
        let father = births.father.map(|birth| {
            self.person(
                rng,
                b,
                true,
                birth,
                Some(father_surname),
                None,
                addr,
                Some(h),
            )
        });
        let mother = births.mother.map(|birth| {
            let foreign = f
                .foreign_wife
                .filter(|_| father.is_some())
                .map(|n| (Foreign::Spouse, n));
            self.person(rng, b, false, birth, None, foreign, addr, Some(h))
        });
        if let (Some(fa), Some(mo)) = (father, mother) {
            b.persons[fa].spouse = Some(mo);
            b.persons[mo].spouse = Some(fa);
        }
        let mother_surname =
            mother.and_then(|m| SURNAMES.iter().position(|s| s.0 == b.persons[m].family));
        let mut kids = Vec::new();
        for &birth in &births.kids {
            let surname = match (father, mother_surname) {
                (Some(_), Some(ms)) if rng.chance(0.03) => ms,
                (Some(_), _) => father_surname,
                (None, Some(ms)) if rng.chance(0.4) => ms,
                _ => self.t.surnames.pick(rng),
            };
            let male = rng.chance(0.515);
            let k = self.person(rng, b, male, birth, Some(surname), None, addr, Some(h));
            b.persons[k].father = father;
            b.persons[k].mother = mother;
            kids.push(k);
        }
        let parent = if f.father_side { father } else { mother };
        let parent_surname =
            parent.and_then(|p| SURNAMES.iter().position(|s| s.0 == b.persons[p].family));
        let grandpa = births
            .grandpa
            .map(|birth| self.person(rng, b, true, birth, parent_surname, None, addr, Some(h)));
        let grandma = births
            .grandma
            .map(|birth| self.person(rng, b, false, birth, None, None, addr, Some(h)));
        if let (Some(gp), Some(gm)) = (grandpa, grandma) {
            b.persons[gp].spouse = Some(gm);
            b.persons[gm].spouse = Some(gp);
        }
        if let Some(p) = parent {
            b.persons[p].father = grandpa;
            b.persons[p].mother = grandma;
            for g in [grandpa, grandma].into_iter().flatten() {
                b.persons[g].carer = Some(p);
            }
        }
        let working = father.or(mother).unwrap_or(b.households[h].members[0]);
        let elder = grandpa.or(grandma);
        b.households[h].head = match elder {
            Some(e) if rng.chance(0.4) => e,
            _ => working,
        };
        (h, father, mother, kids)
    }

    /// A foreign resident living on their own (or in employer housing, for migrant
    /// workers), outside any household.
    fn foreign_single(
        &mut self,
        rng: &mut Rng,
        b: &mut Block,
        kind: Foreign,
        nat: Option<usize>,
    ) -> usize {
        let nat = nat.unwrap_or_else(|| match kind {
            Foreign::Migrant => self.t.migrant_nat.pick(rng),
            Foreign::Professional => self.t.professional_nat.pick(rng),
            _ => self.t.student_nat.pick(rng),
        });
        let (age, male_share) = match kind {
            Foreign::Migrant => (
                rng.range(20, 45),
                match NATIONALITIES[nat].code {
                    "VN" => 0.6,
                    "ID" => 0.3,
                    "PH" => 0.45,
                    _ => 0.85,
                },
            ),
            Foreign::Professional => (rng.range(25, 58), 0.65),
            _ => (rng.range(19, 30), 0.5),
        };
        let male = rng.chance(male_share);
        let (city, district) = self.place(rng);
        let addr = self.addr(rng, b, city, district);
        let birth = self.birth_for_age(rng, age);
        self.person(rng, b, male, birth, None, Some((kind, nat)), addr, None)
    }

    // ----- featured people -----------------------------------------------------------------

    fn featured(&mut self, rng: &mut Rng, b: &mut Block) {
        let today = self.today;
        let big_city = |rng: &mut Rng| -> usize {
            // Taipei, Taichung, Tainan, Kaohsiung, New Taipei, Taoyuan.
            *rng.pick(&[0usize, 1, 3, 4, 5, 7])
        };

        // A baby born 3-9 days ago, at home with both parents (and maybe a big sister or
        // brother).
        let city = big_city(rng);
        let district = self.t.districts[city].pick(rng);
        let addr = self.addr(rng, b, city, district);
        let mother_age = rng.range(29, 35);
        let father_age = mother_age + rng.range(0, 4);
        let mut births = FamilyBirths {
            mother: Some(self.birth_for_age(rng, mother_age)),
            father: Some(self.birth_for_age(rng, father_age)),
            ..FamilyBirths::default()
        };
        if rng.chance(0.5) {
            let sibling = rng.range(2, 5);
            births.kids.push(self.birth_for_age(rng, sibling));
        }
        births.kids.push(today - rng.range(3, 9) as i32);
        let (_, father, mother, kids) = self.family(rng, b, addr, &Family::default(), &births);
        let baby = kids[kids.len() - 1];
        b.featured.push((Role::Baby, baby));
        for p in [father, mother].into_iter().flatten() {
            b.persons[p].keep = true;
        }

        // A child who turns 5 years 6 months within the next 30 days, with both parents.
        let city = big_city(rng);
        let district = self.t.districts[city].pick(rng);
        let addr = self.addr(rng, b, city, district);
        let mut target = today + rng.range(1, 29) as i32;
        while ymd(target).2 > 28 {
            target -= 1;
        }
        if target <= today {
            target = today + 1;
            while ymd(target).2 > 28 {
                target += 1;
            }
        }
        let child_birth = add_months(target, -66);
        let mother_age = rng.range(31, 40);
        let father_age = mother_age + rng.range(-1, 4);
        let births = FamilyBirths {
            mother: Some(self.birth_for_age(rng, mother_age)),
            father: Some(self.birth_for_age(rng, father_age)),
            kids: vec![child_birth],
            ..FamilyBirths::default()
        };
        let (_, father, mother, kids) = self.family(rng, b, addr, &Family::default(), &births);
        b.featured.push((Role::Child55, kids[0]));
        for p in [father, mother].into_iter().flatten() {
            b.persons[p].keep = true;
        }

        // A 74-year-old whose ordinary car licence expires on their 75th birthday, 20-40
        // days from now; lives with their spouse.
        let (city, district) = self.place(rng);
        let addr = self.addr(rng, b, city, district);
        let mut expiry = today + rng.range(20, 40) as i32;
        if ymd(expiry).1 == 2 && ymd(expiry).2 == 29 {
            expiry += 1;
        }
        let wife_age = rng.range(68, 74);
        let births = FamilyBirths {
            father: Some(add_years(expiry, -75)),
            mother: Some(self.birth_for_age(rng, wife_age)),
            ..FamilyBirths::default()
        };
        let (h, father, _, _) = self.family(rng, b, addr, &Family::default(), &births);
        if let Some(f) = father {
            b.featured.push((Role::LicenceExpiring, f));
            b.households[h].head = f;
        }

        // A foreign professional whose resident certificate expires soon.
        const PROFESSIONAL_COUNTRIES: [&str; 6] = ["US", "JP", "IN", "DE", "FR", "GB"];
        let country = PROFESSIONAL_COUNTRIES[rng.below(6) as usize];
        let nat = names::nationality(country);
        let p = self.foreign_single(rng, b, Foreign::Professional, Some(nat));
        b.featured.push((Role::ForeignProfessional, p));
        let age = rng.range(31, 42);
        let birth = self.birth_for_age(rng, age);
        b.persons[p].birth = birth;
        b.persons[p].arrived = add_years(today, -rng.range(4, 6) as i32) + rng.range(0, 200) as i32;

        // A couple in their late fifties who own their home and are about to sell it...
        let city = big_city(rng);
        let district = self.t.districts[city].pick(rng);
        let addr = self.addr(rng, b, city, district);
        let age = rng.range(55, 62);
        let wife_age = age - rng.range(0, 3);
        let births = FamilyBirths {
            father: Some(self.birth_for_age(rng, age)),
            mother: Some(self.birth_for_age(rng, wife_age)),
            ..FamilyBirths::default()
        };
        let (h, father, _, _) = self.family(rng, b, addr, &Family::default(), &births);
        if let Some(f) = father {
            b.featured.push((Role::PropertySeller, f));
            b.households[h].head = f;
        }

        // ...and a buyer in the same city, renting for now.
        let district = self.t.districts[city].pick(rng);
        let addr = self.addr(rng, b, city, district);
        let h = self.household(b, addr);
        let male = rng.chance(0.5);
        let age = rng.range(31, 38);
        let birth = self.birth_for_age(rng, age);
        let p = self.person(rng, b, male, birth, None, None, addr, Some(h));
        b.households[h].head = p;
        b.featured.push((Role::PropertyBuyer, p));

        // An older person living alone.
        let (city, district) = self.place(rng);
        let addr = self.addr(rng, b, city, district);
        let h = self.household(b, addr);
        let male = rng.chance(0.35);
        let age = rng.range(81, 90);
        let birth = self.birth_for_age(rng, age);
        let p = self.person(rng, b, male, birth, None, None, addr, Some(h));
        b.households[h].head = p;
        b.featured.push((Role::ElderlyAlone, p));

        for &(role, p) in &b.featured {
            b.persons[p].featured = Some(role);
            b.persons[p].keep = true;
        }
    }

    // ----- businesses and work ---------------------------------------------------------

    fn businesses(&mut self, rng: &mut Rng, b: &mut Block, count: usize) {
        let today = self.today;
        let adults: Vec<usize> = (0..b.persons.len())
            .filter(|&i| {
                let p = &b.persons[i];
                (25..=75).contains(&age_on(p.birth, today))
                    && !p.keep
                    && matches!(
                        p.foreign,
                        None | Some(Foreign::Professional) | Some(Foreign::Spouse)
                    )
            })
            .collect();
        let foreign_pro = b
            .featured
            .iter()
            .find(|f| f.0 == Role::ForeignProfessional)
            .map(|f| f.1);
        let mut owners: Vec<usize> = Vec::new();
        for n in 0..count {
            // The featured foreign professional's employer: an IT company in their city.
            let for_featured = n == 0 && foreign_pro.is_some();
            let mut owner = None;
            if !adults.is_empty() {
                for _ in 0..8 {
                    let c = adults[rng.below(adults.len() as u64) as usize];
                    if !owners.contains(&c) {
                        owner = Some(c);
                        break;
                    }
                }
            }
            let (city, district) = match (owner, foreign_pro.filter(|_| for_featured)) {
                (_, Some(f)) => (
                    b.addrs[b.persons[f].addr].city,
                    b.addrs[b.persons[f].addr].district,
                ),
                (Some(o), None) => {
                    let a = &b.addrs[b.persons[o].addr];
                    let city = a.city;
                    (
                        city,
                        if rng.chance(0.6) {
                            a.district
                        } else {
                            self.t.districts[city].pick(rng)
                        },
                    )
                }
                (None, None) => self.place(rng),
            };
            let shop = !for_featured && rng.chance(0.45);
            let line: &Line = if for_featured {
                catalog::COMPANY_LINES
                    .iter()
                    .find(|l| l.group == Group::Office && l.word_en == "Information Technology")
                    .unwrap_or(&catalog::COMPANY_LINES[0])
            } else if shop {
                &catalog::SHOP_LINES[self.t.shop_lines.pick(rng)]
            } else {
                &catalog::COMPANY_LINES[self.t.company_lines.pick(rng)]
            };
            let kind = if shop {
                if rng.chance(0.9) {
                    "sole_proprietorship"
                } else {
                    "partnership"
                }
            } else if rng.chance(0.65) || line.group == Group::Shop {
                "limited_company"
            } else {
                "company_limited_by_shares"
            };
            let id = self.next_business;
            self.next_business += 1;
            let (brand_zh, brand_en) = *rng.pick(catalog::BRANDS);
            let (name_zh, name_en) = match kind {
                "sole_proprietorship" | "partnership" => (
                    format!("{brand_zh}{}", line.word_zh),
                    format!("{brand_en} {}", line.word_en),
                ),
                "limited_company" => (
                    format!("{brand_zh}{}有限公司", line.word_zh),
                    format!("{brand_en} {} Co., Ltd.", line.word_en),
                ),
                _ => (
                    format!("{brand_zh}{}股份有限公司", line.word_zh),
                    format!("{brand_en} {} Corporation", line.word_en),
                ),
            };
            self.rings[city][line.group as usize].push(id);
            self.any_ring[line.group as usize].push(id);
            if for_featured {
                b.foreign_employer = Some(id);
            }
            if let Some(o) = owner {
                owners.push(o);
                b.persons[o].occ = Occ::Owner(id);
                b.reps.push((id, o, "responsible_person"));
                let others = match kind {
                    "partnership" => 1,
                    "company_limited_by_shares" => rng.range(3, 5) as usize,
                    "limited_company" => rng.range(0, 1) as usize,
                    _ => 0,
                };
                let mut taken = vec![o];
                for k in 0..others {
                    let c = adults[rng.below(adults.len() as u64) as usize];
                    if taken.contains(&c) {
                        continue;
                    }
                    taken.push(c);
                    let role = match kind {
                        "partnership" => "partner",
                        _ if k + 1 == others && others >= 3 => "supervisor",
                        _ => "director",
                    };
                    b.reps.push((id, c, role));
                }
            }
            b.businesses.push(B {
                id,
                name_zh,
                name_en,
                kind,
                industry: (line.industry_zh, line.industry_en),
                city,
                district,
                group: line.group,
            });
        }
    }

    /// An employer of the wanted group in `city`, else of that group anywhere, else of
    /// another group.
    fn employer(&self, rng: &mut Rng, city: usize, group: Group) -> i64 {
        let g = group as usize;
        for k in [g, (g + 1) % 3, (g + 2) % 3] {
            if let Some(id) = self.rings[city][k]
                .pick(rng)
                .or_else(|| self.any_ring[k].pick(rng))
            {
                return id;
            }
        }
        1
    }

    fn any_employer(&self, rng: &mut Rng, city: usize) -> i64 {
        let group = match rng.below(100) {
            0..40 => Group::Industrial,
            40..75 => Group::Office,
            _ => Group::Shop,
        };
        self.employer(rng, city, group)
    }

    fn occupations(&mut self, rng: &mut Rng, b: &mut Block) {
        let today = self.today;
        for i in 0..b.persons.len() {
            let p = &b.persons[i];
            let age = age_on(p.birth, today) as i64;
            let city = b.addrs[p.addr].city;
            let county = !self.city(city).urban();
            let occ = match (p.occ, p.foreign) {
                (Occ::Owner(id), _) => Occ::Owner(id),
                (_, Some(Foreign::Migrant)) => {
                    Occ::Employee(self.employer(rng, city, Group::Industrial))
                }
                (_, Some(Foreign::Professional)) => match (p.featured, b.foreign_employer) {
                    (Some(Role::ForeignProfessional), Some(e)) => Occ::Employee(e),
                    _ => Occ::Employee(self.employer(rng, city, Group::Office)),
                },
                (_, Some(Foreign::Student)) => Occ::Student,
                _ if age < 18 => Occ::Child,
                _ if age <= 23 => {
                    let study = if age <= 21 { 0.68 } else { 0.15 };
                    if p.foreign.is_none() && rng.chance(study) {
                        Occ::Student
                    } else if p.keep || rng.chance(0.88) {
                        Occ::Employee(self.any_employer(rng, city))
                    } else {
                        Occ::Unemployed
                    }
                }
                _ if age <= 64 => {
                    if p.keep {
                        Occ::Employee(self.any_employer(rng, city))
                    } else if age >= 55 && rng.chance(0.3) {
                        Occ::Retired
                    } else if p.foreign == Some(Foreign::Spouse) {
                        if rng.chance(0.55) {
                            let group = if rng.chance(0.5) {
                                Group::Shop
                            } else {
                                Group::Industrial
                            };
                            Occ::Employee(self.employer(rng, city, group))
                        } else {
                            Occ::Homemaker
                        }
                    } else {
                        let farmer = if county { 0.07 } else { 0.01 };
                        let u = rng.unit();
                        let (union, home) = if p.male { (0.05, 0.02) } else { (0.04, 0.18) };
                        if u < farmer {
                            Occ::Farmer
                        } else if u < farmer + union {
                            Occ::Union(rng.below(3) as u8)
                        } else if u < farmer + union + 0.04 {
                            Occ::Unemployed
                        } else if u < farmer + union + 0.04 + home {
                            Occ::Homemaker
                        } else {
                            Occ::Employee(self.any_employer(rng, city))
                        }
                    }
                }
                _ => {
                    if p.keep {
                        Occ::Retired
                    } else if age <= 75 && rng.chance(0.08) {
                        Occ::Employee(self.any_employer(rng, city))
                    } else if county && age <= 85 && rng.chance(0.1) {
                        Occ::Farmer
                    } else {
                        Occ::Retired
                    }
                }
            };
            let income = self.income(rng, b, occ, age, p.foreign);
            let p = &mut b.persons[i];
            p.occ = occ;
            p.income = income;
        }
    }

    /// This year's income of someone with this occupation and age, in NT$.
    fn income(
        &self,
        rng: &mut Rng,
        b: &Block,
        occ: Occ,
        age: i64,
        foreign: Option<Foreign>,
    ) -> i64 {
        let v = match (occ, foreign) {
            (Occ::Employee(_), Some(Foreign::Migrant)) => rng.range(330_000, 460_000) as f64,
            (Occ::Employee(_), Some(Foreign::Professional)) => rng.quantile(&[
                (0.0, 1_000_000.0),
                (0.5, 1_600_000.0),
                (0.9, 2_800_000.0),
                (1.0, 4_500_000.0),
            ]),
            (Occ::Employee(_), _) => {
                let factor = match age {
                    0..25 => 0.7,
                    25..30 => 0.85,
                    30..40 => 1.0,
                    40..55 => 1.15,
                    55..65 => 1.05,
                    _ => 0.75,
                };
                factor
                    * rng.quantile(&[
                        (0.0, 330_000.0),
                        (0.25, 440_000.0),
                        (0.5, 570_000.0),
                        (0.75, 790_000.0),
                        (0.9, 1_100_000.0),
                        (0.98, 2_000_000.0),
                        (1.0, 4_500_000.0),
                    ])
            }
            (Occ::Owner(id), _) => {
                let small = b
                    .businesses
                    .iter()
                    .find(|x| x.id == id)
                    .is_none_or(|x| matches!(x.kind, "sole_proprietorship" | "partnership"));
                if small {
                    rng.quantile(&[(0.0, 250_000.0), (0.5, 650_000.0), (1.0, 1_800_000.0)])
                } else {
                    rng.quantile(&[
                        (0.0, 700_000.0),
                        (0.5, 1_500_000.0),
                        (0.9, 3_500_000.0),
                        (1.0, 8_000_000.0),
                    ])
                }
            }
            (Occ::Farmer, _) => rng.range(150_000, 450_000) as f64,
            (Occ::Union(_), _) => rng.range(280_000, 700_000) as f64,
            (Occ::Retired, _) => {
                if rng.chance(0.35) {
                    0.0
                } else {
                    rng.quantile(&[(0.0, 60_000.0), (0.6, 250_000.0), (1.0, 700_000.0)])
                }
            }
            (Occ::Student, _) => {
                if rng.chance(0.2) {
                    rng.range(40_000, 180_000) as f64
                } else {
                    0.0
                }
            }
            (Occ::Unemployed, _) => {
                if rng.chance(0.3) {
                    rng.range(30_000, 150_000) as f64
                } else {
                    0.0
                }
            }
            (Occ::Homemaker | Occ::Child, _) => 0.0,
        };
        (v as i64) / 100 * 100
    }

    // ----- rows --------------------------------------------------------------------------

    fn emit_people(&mut self, rng: &mut Rng, b: &mut Block, rows: &mut Rows) {
        let today = self.today;
        for h in &b.households {
            let a = &b.addrs[h.addr];
            rows.households.row([
                Value::I64(h.id),
                Value::Text(h.no.clone()),
                Value::I64(b.persons[h.head].id),
                Value::Text(self.t.city_codes[a.city].clone()),
                Value::Text(self.district_code(a.city, a.district)),
                Value::Text(a.zh.clone()),
                Value::Text(a.en.clone()),
            ]);
        }
        for p in &b.persons {
            let a = &b.addrs[p.addr];
            let age = age_on(p.birth, today);
            let phone = (age >= 12 && (age < 80 || rng.chance(0.6))).then(|| {
                let mut s = String::from("09");
                push_num(&mut s, rng.below(100_000_000) as u32, 8);
                s
            });
            let email = (age >= 15 && (age < 80 || rng.chance(0.4)))
                .then(|| email(&p.given_latin, p.family_latin, p.id));
            rows.persons.row([
                Value::I64(p.id),
                Value::Text(p.nid.clone()),
                Value::Str(p.family),
                Value::Text(p.given.clone()),
                Value::Str(p.family_latin),
                Value::Text(p.given_latin.clone()),
                Value::Str(if p.male { "M" } else { "F" }),
                Value::Text(iso(p.birth)),
                Value::NullText,
                Value::Str(p.nat),
                p.hh.map(|h| b.households[h].id).into(),
                email.into(),
                phone.into(),
                Value::Text(self.t.city_codes[a.city].clone()),
                Value::Text(self.district_code(a.city, a.district)),
                Value::Text(a.zh.clone()),
                Value::Text(a.en.clone()),
            ]);
            for (parent, relation) in [(p.father, "father"), (p.mother, "mother")] {
                if let Some(par) = parent {
                    rows.parent_links.row([
                        Value::I64(p.id),
                        Value::I64(b.persons[par].id),
                        Value::Str(relation),
                    ]);
                }
            }
        }
    }

    fn district_code(&self, city: usize, district: usize) -> String {
        self.t.district_codes[self.t.district_base[city] + district].clone()
    }

    fn emit_businesses(&mut self, rng: &mut Rng, b: &Block, rows: &mut Rows) {
        for x in &b.businesses {
            let n = (x.id - 1) as u64;
            let prefix = ((n * MUL + self.ubn_offset) % 10_000_000) as u32;
            let years = rng.quantile(&[(0.0, 0.0), (0.5, 8.0), (0.85, 20.0), (1.0, 45.0)]);
            let mut registered = self.today - (years * 365.25) as i32 - rng.range(1, 360) as i32;
            if let Some(&(_, o, _)) = b
                .reps
                .iter()
                .find(|r| r.0 == x.id && r.2 == "responsible_person")
            {
                registered = registered
                    .max(add_years(b.persons[o].birth, 20))
                    .min(self.today - 1);
            }
            let capital = match x.kind {
                "sole_proprietorship" => {
                    rng.quantile(&[(0.0, 50_000.0), (0.7, 300_000.0), (1.0, 2_000_000.0)])
                }
                "partnership" => rng.quantile(&[(0.0, 200_000.0), (1.0, 3_000_000.0)]),
                "limited_company" => {
                    rng.quantile(&[(0.0, 500_000.0), (0.6, 5_000_000.0), (1.0, 50_000_000.0)])
                }
                _ => rng.quantile(&[
                    (0.0, 5_000_000.0),
                    (0.7, 80_000_000.0),
                    (0.97, 1_000_000_000.0),
                    (1.0, 20_000_000_000.0),
                ]),
            } as i64
                / 10_000
                * 10_000;
            rows.businesses.row([
                Value::I64(x.id),
                Value::Text(ubn_from_prefix(prefix)),
                Value::Text(x.name_zh.clone()),
                Value::Text(x.name_en.clone()),
                Value::Str(x.kind),
                Value::Str(x.industry.0),
                Value::Str(x.industry.1),
                Value::Text(self.t.city_codes[x.city].clone()),
                Value::Text(self.district_code(x.city, x.district)),
                Value::Text(iso(registered)),
                Value::I64(capital),
                Value::Str("active"),
            ]);
        }
        for &(id, p, role) in &b.reps {
            rows.reps.row([
                Value::I64(id),
                Value::I64(b.persons[p].id),
                Value::Str(role),
            ]);
        }
    }

    fn emit_certificates(&mut self, rng: &mut Rng, b: &mut Block, rows: &mut Rows) {
        let today = self.today;
        let mut featured_expiry = None;
        for p in &b.persons {
            let Some(kind) = p.foreign else { continue };
            let (purpose, years) = match kind {
                Foreign::Migrant => ("migrant_work", 3),
                Foreign::Professional => ("employment", 3),
                Foreign::Student => ("study", 1),
                Foreign::Spouse => ("family", 3),
            };
            let (issued, expires) = if p.featured == Some(Role::ForeignProfessional) {
                let expires = today + rng.range(20, 45) as i32;
                featured_expiry = Some(expires);
                (add_years(expires + 1, -years), expires)
            } else {
                let mut issued = p.arrived;
                while add_years(issued, years) - 1 < today {
                    issued = add_years(issued, years);
                }
                (issued, add_years(issued, years) - 1)
            };
            let employer = match p.occ {
                Occ::Employee(e) | Occ::Owner(e) => Some(e),
                _ => None,
            };
            rows.certificates.row([
                Value::I64(p.id),
                Value::Text(p.nid.clone()),
                Value::Str(purpose),
                Value::Text(iso(issued)),
                Value::Text(iso(expires)),
                employer.into(),
            ]);
        }
        if featured_expiry.is_some() {
            b.cert_expiry = featured_expiry;
        }
    }
}

/// Ages (in years) of the members of a family household to be generated.
#[derive(Debug, Default, Clone)]
struct Family {
    father: Option<i64>,
    mother: Option<i64>,
    kids: Vec<i64>,
    grandpa: Option<i64>,
    grandma: Option<i64>,
    /// Whether the grandparents are the father's parents (else the mother's).
    father_side: bool,
    foreign_wife: Option<usize>,
}

impl Family {
    fn size(&self) -> usize {
        usize::from(self.father.is_some())
            + usize::from(self.mother.is_some())
            + self.kids.len()
            + usize::from(self.grandpa.is_some())
            + usize::from(self.grandma.is_some())
    }
}

/// Birth dates of a family's members.
#[derive(Debug, Default, Clone)]
struct FamilyBirths {
    father: Option<i32>,
    mother: Option<i32>,
    kids: Vec<i32>,
    grandpa: Option<i32>,
    grandma: Option<i32>,
}

/// `given.family.id@example.tw`, in lower-case ASCII.
fn email(given: &str, family: &str, id: i64) -> String {
    let mut s = String::with_capacity(40);
    s.extend(
        given
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase()),
    );
    s.push('.');
    s.extend(
        family
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase()),
    );
    s.push('.');
    s.push_str(&id.to_string());
    s.push_str("@example.tw");
    s
}

/// Letters used on plates (no I or O).
const PLATE_LETTERS: &[u8; 24] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";

fn plate_letters(s: &mut String, mut v: u64) {
    let c = PLATE_LETTERS[(v % 24) as usize];
    v /= 24;
    let b = PLATE_LETTERS[(v % 24) as usize];
    v /= 24;
    let a = PLATE_LETTERS[(v % 24) as usize];
    s.push(a as char);
    s.push(b as char);
    s.push(c as char);
}

/// The date a licence of an ordinary class must be renewed.
///
/// Since 2013 ordinary licences (cars, motorcycles, ordinary trucks) carry no validity
/// period until the holder turns 75: they must then be renewed after a medical check and a
/// cognitive screening, and again every three years. So the stored expiry is the 75th
/// birthday, or the next three-year renewal after it. Professional licences are valid for
/// six years at a time and renewed at a medical check.
fn ordinary_expiry(birth: i32, today: i32) -> i32 {
    let mut e = add_years(birth, 75);
    let mut n = 75;
    while e <= today {
        n += 3;
        e = add_years(birth, n);
    }
    e
}

impl Generator {
    fn car_plate(&mut self) -> String {
        const M: u64 = 13_824 * 10_000;
        let v = (self.cars * MUL + self.plate_offset % M) % M;
        self.cars += 1;
        let mut s = String::with_capacity(8);
        plate_letters(&mut s, v / 10_000);
        s.push('-');
        push_num(&mut s, (v % 10_000) as u32, 4);
        s
    }

    fn motorcycle_plate(&mut self) -> String {
        const M: u64 = 13_824 * 1_000;
        let i = self.motorcycles;
        self.motorcycles += 1;
        let v = ((i % M) * MUL + (self.plate_offset >> 20) % M) % M;
        let mut s = String::with_capacity(7);
        if i < M {
            push_num(&mut s, (v % 1_000) as u32, 3);
            s.push('-');
            plate_letters(&mut s, v / 1_000);
        } else {
            plate_letters(&mut s, v / 1_000);
            s.push('-');
            push_num(&mut s, (v % 1_000) as u32, 3);
        }
        s
    }

    fn licence(
        &self,
        rng: &mut Rng,
        rows: &mut Rows,
        p: &P,
        class: usize,
        issued: i32,
        keep: bool,
    ) {
        let (code, zh, _) = catalog::LICENCE_CLASSES[class];
        let expires = if code == "professional_car" {
            let mut e = add_years(issued, 6);
            while e <= self.today {
                e = add_years(e, 6);
            }
            e
        } else {
            ordinary_expiry(p.birth, self.today)
        };
        let status = if keep {
            "valid"
        } else {
            match rng.below(1000) {
                0..5 => "suspended",
                5..7 => "revoked",
                _ => "valid",
            }
        };
        rows.licences.row([
            Value::I64(p.id),
            Value::Str(code),
            Value::Text(p.nid.clone()),
            Value::Str(zh),
            Value::Text(iso(issued)),
            Value::Text(iso(expires)),
            Value::Str(status),
        ]);
    }

    /// A vehicle of `kind` ("car", "motorcycle" or "truck"), first registered no earlier
    /// than `earliest`.
    fn vehicle(
        &mut self,
        rng: &mut Rng,
        rows: &mut Rows,
        kind: &'static str,
        person: Option<i64>,
        business: Option<i64>,
        earliest: i32,
    ) {
        let today = self.today;
        let (make, model, _) = match kind {
            "car" => catalog::CARS[self.t.cars.pick(rng)],
            "truck" => catalog::TRUCKS[self.t.trucks.pick(rng)],
            _ => catalog::MOTORCYCLES[self.t.motorcycles.pick(rng)],
        };
        let age = rng.quantile(&[(0.0, 0.0), (0.5, 6.0), (0.85, 13.0), (1.0, 24.0)]);
        let mut registered = today - (age * 365.25) as i32 - rng.range(1, 300) as i32;
        if registered < earliest {
            let span = i64::from((today - earliest).max(1));
            registered = earliest + rng.below(span as u64) as i32;
        }
        let registered = registered.min(today - 1);
        let (year, _, _) = ymd(registered);
        let model_year = if rng.chance(0.2) { year - 1 } else { year };
        // Periodic inspection: first at five years, then yearly on the anniversary.
        let first = add_years(registered, 5);
        let mut due = first;
        let mut n = 5;
        while due < today {
            n += 1;
            due = add_years(registered, n);
        }
        if n > 5 && rng.chance(0.02) {
            due = add_years(registered, n - 1);
        }
        let plate = if kind == "motorcycle" {
            self.motorcycle_plate()
        } else {
            self.car_plate()
        };
        rows.vehicles.row([
            Value::Text(plate),
            Value::Str(kind),
            person.into(),
            business.into(),
            Value::Str(make),
            Value::Str(model),
            Value::I64(i64::from(model_year)),
            Value::Text(iso(registered)),
            Value::Text(iso(due)),
        ]);
    }

    fn emit_licences_and_vehicles(&mut self, rng: &mut Rng, b: &mut Block, rows: &mut Rows) {
        let today = self.today;
        for i in 0..b.persons.len() {
            let p = &b.persons[i];
            let age = age_on(p.birth, today) as i64;
            if age < 18 {
                continue;
            }
            let earliest = add_years(p.birth, 18).max(if p.foreign.is_some() {
                p.arrived + 30
            } else {
                0
            });
            if earliest >= today - 1 {
                continue;
            }
            let span = f64::from(today - 1 - earliest);
            let (car_p, moto_p) = match p.foreign {
                Some(Foreign::Professional) => (0.35, 0.4),
                Some(Foreign::Spouse) => (0.15, 0.55),
                Some(Foreign::Migrant) => (0.0, 0.08),
                Some(Foreign::Student) => (0.05, 0.2),
                None => {
                    let car = match (p.male, age) {
                        (true, 18..30) => 0.55,
                        (true, 30..65) => 0.8,
                        (true, 65..75) => 0.7,
                        (true, _) => 0.4,
                        (false, 18..30) => 0.45,
                        (false, 30..65) => 0.6,
                        (false, 65..75) => 0.35,
                        (false, _) => 0.15,
                    };
                    let moto = match age {
                        18..30 => 0.75,
                        30..65 => 0.85,
                        65..75 => 0.7,
                        _ => 0.45,
                    };
                    (car, moto)
                }
            };
            let featured = p.featured == Some(Role::LicenceExpiring);
            let car = featured || rng.chance(car_p);
            let moto = rng.chance(moto_p);
            if moto {
                let class = if age >= 60 && rng.chance(0.15) { 2 } else { 1 };
                let issued = earliest + (rng.unit() * span.min(3.0 * 365.0)) as i32;
                self.licence(rng, rows, p, class, issued, p.keep);
            }
            if car {
                let years = rng.quantile(&[(0.0, 0.0), (0.6, 4.0), (1.0, 20.0)]);
                let issued = earliest + (years * 365.0).min(span) as i32;
                self.licence(rng, rows, p, 0, issued, p.keep);
                if p.foreign.is_none() && p.male && !p.keep && (25..=70).contains(&age) {
                    if rng.chance(0.04) {
                        let pro_from = add_years(p.birth, 22).max(issued);
                        let issued = pro_from
                            + (rng.unit() * f64::from((today - 1 - pro_from).max(0))) as i32;
                        self.licence(rng, rows, p, 3, issued, false);
                    }
                    if age <= 65 && rng.chance(0.02) {
                        let from = add_years(p.birth, 20).max(issued);
                        let issued =
                            from + (rng.unit() * f64::from((today - 1 - from).max(0))) as i32;
                        self.licence(rng, rows, p, 4, issued, false);
                    }
                }
            }
            let p = &mut b.persons[i];
            p.car = car;
            p.moto = moto;
        }

        // Cars belong to households (registered to a licensed member); foreign residents
        // outside households own their own.
        for h in 0..b.households.len() {
            let city = b.addrs[b.households[h].addr].city;
            let licensed: Vec<usize> = b.households[h]
                .members
                .iter()
                .copied()
                .filter(|&m| b.persons[m].car && age_on(b.persons[m].birth, today) <= 85)
                .collect();
            if licensed.is_empty() {
                continue;
            }
            let share = if city == 0 {
                0.45
            } else if self.city(city).urban() {
                0.62
            } else {
                0.7
            };
            if !rng.chance(share) {
                continue;
            }
            let head = b.households[h].head;
            let first = if licensed.contains(&head) {
                head
            } else {
                licensed[0]
            };
            let owners: Vec<usize> = if licensed.len() >= 2 && rng.chance(0.15) {
                vec![
                    first,
                    *licensed.iter().find(|&&m| m != first).unwrap_or(&first),
                ]
            } else {
                vec![first]
            };
            for o in owners {
                let earliest = add_years(b.persons[o].birth, 18);
                self.vehicle(rng, rows, "car", Some(b.persons[o].id), None, earliest);
            }
        }
        for i in 0..b.persons.len() {
            let p = &b.persons[i];
            let city = b.addrs[p.addr].city;
            let earliest =
                add_years(p.birth, 18).max(if p.foreign.is_some() { p.arrived } else { 0 });
            let (id, car, moto) = (p.id, p.car, p.moto);
            if p.hh.is_none() && car && rng.chance(0.4) {
                self.vehicle(rng, rows, "car", Some(id), None, earliest);
            }
            if moto
                && age_on(p.birth, today) <= 80
                && rng.chance(if city == 0 { 0.45 } else { 0.62 })
            {
                self.vehicle(rng, rows, "motorcycle", Some(id), None, earliest);
            }
        }
        for k in 0..b.businesses.len() {
            if !rng.chance(0.2) {
                continue;
            }
            let (id, group) = (b.businesses[k].id, b.businesses[k].group);
            let kind = match group {
                Group::Industrial => "truck",
                Group::Office => "car",
                Group::Shop => "motorcycle",
            };
            for _ in 0..rng.range(1, 2) {
                self.vehicle(rng, rows, kind, None, Some(id), today - 20 * 365);
            }
        }
    }

    // ----- land and buildings ----------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    fn parcel(
        &mut self,
        rng: &mut Rng,
        rows: &mut Rows,
        city: usize,
        district: usize,
        zoning: &'static str,
        person: Option<i64>,
        business: Option<i64>,
    ) -> (i64, String) {
        let c = self.city(city);
        let d = self.district(city, district);
        let g = self.t.district_base[city] + district;
        let n = self.parcel_serials[g];
        self.parcel_serials[g] += 1;
        let sub = n % 5 + 1;
        let m = n / 5;
        let mut lot = String::with_capacity(9);
        push_num(&mut lot, m / 3 + 1, 4);
        lot.push('-');
        push_num(&mut lot, m % 3, 4);
        let code = &self.t.district_codes[g];
        let parcel_no = format!("{code}-{sub}-{lot}");
        let section_zh = format!("{}段{}小段", d.school.0, SECTION_ZH[sub as usize]);
        let section_en = format!("{} Section, Subsection {sub}", d.school.1);
        let area = match zoning {
            "residential" if c.urban() => rng.quantile(&[(0.0, 15.0), (0.8, 45.0), (1.0, 120.0)]),
            "residential" => rng.quantile(&[(0.0, 80.0), (0.8, 220.0), (1.0, 450.0)]),
            "rural_residential" => rng.range(120, 500) as f64,
            "commercial" => rng.quantile(&[(0.0, 40.0), (0.8, 180.0), (1.0, 800.0)]),
            "industrial" => rng.quantile(&[(0.0, 300.0), (0.8, 1_500.0), (1.0, 6_000.0)]),
            _ => rng.quantile(&[(0.0, 500.0), (0.8, 2_500.0), (1.0, 9_000.0)]),
        };
        let area = (area * 100.0).round() / 100.0;
        let centre = 1.0 - 0.45 * district as f64 / (c.districts.len().max(2) - 1) as f64;
        let zoning_factor = match zoning {
            "residential" => 1.0,
            "rural_residential" => 0.45,
            "commercial" => 1.6,
            "industrial" => 0.5,
            _ => 0.04,
        };
        let value = f64::from(c.land_value) * centre * zoning_factor * (0.75 + 0.5 * rng.unit());
        let value = (value as i64).max(100) / 10 * 10;
        let id = self.next_parcel;
        self.next_parcel += 1;
        rows.parcels.row([
            Value::I64(id),
            Value::Text(parcel_no.clone()),
            Value::Text(self.t.city_codes[city].clone()),
            Value::Text(code.clone()),
            Value::Text(section_zh),
            Value::Text(section_en),
            Value::Text(lot),
            Value::F64(area),
            Value::Str(zoning),
            person.into(),
            business.into(),
            Value::I64(value),
        ]);
        (id, parcel_no)
    }

    #[allow(clippy::too_many_arguments)]
    fn building(
        &mut self,
        rng: &mut Rng,
        rows: &mut Rows,
        parcel: i64,
        addr: &Addr,
        main_use: &'static str,
        person: Option<i64>,
        business: Option<i64>,
    ) -> String {
        let g = self.t.district_base[addr.city] + addr.district;
        let n = self.building_serials[g];
        self.building_serials[g] += 1;
        let mut no = String::with_capacity(9);
        push_num(&mut no, n / 4 + 1, 5);
        no.push('-');
        push_num(&mut no, n % 4, 3);
        let urban = self.city(addr.city).urban();
        let area = match main_use {
            "residential" if urban => rng.quantile(&[(0.0, 40.0), (0.5, 95.0), (1.0, 230.0)]),
            "residential" => rng.quantile(&[(0.0, 80.0), (0.5, 160.0), (1.0, 330.0)]),
            "commercial" => rng.quantile(&[(0.0, 60.0), (0.8, 300.0), (1.0, 1_500.0)]),
            _ => rng.quantile(&[(0.0, 300.0), (0.8, 2_000.0), (1.0, 8_000.0)]),
        };
        let area = (area * 100.0).round() / 100.0;
        let last = f64::from(ymd(self.today).0 - 1);
        let year = rng.quantile(&[
            (0.0, 1960.0),
            (0.3, 1985.0),
            (0.7, 2003.0),
            (1.0, last + 0.99),
        ]) as i64;
        rows.buildings.row([
            Value::I64(self.next_building),
            Value::Text(no.clone()),
            Value::I64(parcel),
            Value::Text(self.t.city_codes[addr.city].clone()),
            Value::Text(self.district_code(addr.city, addr.district)),
            Value::Text(addr.zh.clone()),
            Value::Text(addr.en.clone()),
            Value::F64(area),
            Value::Str(main_use),
            Value::I64(year),
            person.into(),
            business.into(),
        ]);
        self.next_building += 1;
        no
    }

    fn emit_property(&mut self, rng: &mut Rng, b: &mut Block, rows: &mut Rows) {
        let today = self.today;
        for h in 0..b.households.len() {
            let members = &b.households[h].members;
            let seller = members
                .iter()
                .copied()
                .find(|&m| b.persons[m].featured == Some(Role::PropertySeller));
            let buyer = members
                .iter()
                .any(|&m| b.persons[m].featured == Some(Role::PropertyBuyer));
            let addr = b.households[h].addr;
            let city = b.addrs[addr].city;
            let head = b.households[h].head;
            let young_single = members.len() == 1 && age_on(b.persons[head].birth, today) < 30;
            let share = if young_single {
                0.3
            } else if city == 0 {
                0.72
            } else if self.city(city).urban() {
                0.8
            } else {
                0.86
            };
            let owns = seller.is_some() || (!buyer && rng.chance(share));
            if !owns {
                continue;
            }
            let owner = match (seller, b.persons[head].spouse) {
                (Some(s), _) => s,
                (None, Some(sp))
                    if age_on(b.persons[sp].birth, today) >= 20 && rng.chance(0.35) =>
                {
                    sp
                }
                _ => head,
            };
            let owner_id = b.persons[owner].id;
            let zoning = if self.city(city).urban() || rng.chance(0.6) {
                "residential"
            } else {
                "rural_residential"
            };
            let district = b.addrs[addr].district;
            let (parcel_id, parcel_no) =
                self.parcel(rng, rows, city, district, zoning, Some(owner_id), None);
            let building_no = self.building(
                rng,
                rows,
                parcel_id,
                &b.addrs[addr],
                "residential",
                Some(owner_id),
                None,
            );
            if seller.is_some() {
                b.seller_property = Some((parcel_no, building_no));
            } else if rng.chance(if self.city(city).urban() { 0.01 } else { 0.08 }) {
                self.parcel(
                    rng,
                    rows,
                    city,
                    district,
                    "agricultural",
                    Some(owner_id),
                    None,
                );
            }
        }
        for i in 0..b.persons.len() {
            let p = &b.persons[i];
            if p.hh.is_none()
                && p.foreign == Some(Foreign::Professional)
                && p.featured.is_none()
                && rng.chance(0.1)
            {
                let (id, addr) = (p.id, p.addr);
                let (city, district) = (b.addrs[addr].city, b.addrs[addr].district);
                let (parcel_id, _) =
                    self.parcel(rng, rows, city, district, "residential", Some(id), None);
                self.building(
                    rng,
                    rows,
                    parcel_id,
                    &b.addrs[addr],
                    "residential",
                    Some(id),
                    None,
                );
            }
        }
        for k in 0..b.businesses.len() {
            if !rng.chance(0.25) {
                continue;
            }
            let (id, city, district, group) = (
                b.businesses[k].id,
                b.businesses[k].city,
                b.businesses[k].district,
                b.businesses[k].group,
            );
            let (zoning, main_use) = if group == Group::Industrial {
                ("industrial", "industrial")
            } else {
                ("commercial", "commercial")
            };
            let addr = self.addr(rng, b, city, district);
            let (parcel_id, _) = self.parcel(rng, rows, city, district, zoning, None, Some(id));
            self.building(
                rng,
                rows,
                parcel_id,
                &b.addrs[addr],
                main_use,
                None,
                Some(id),
            );
        }
    }

    // ----- tax, health insurance, schools ------------------------------------------------

    fn emit_taxes(&mut self, rng: &mut Rng, b: &Block, rows: &mut Rows) {
        let last = self.tax_years[2];
        for p in &b.persons {
            if p.income <= 0 {
                continue;
            }
            let (birth_year, _, _) = ymd(p.birth);
            let (arrival_year, _, _) = ymd(p.arrived);
            for &year in &self.tax_years {
                if year - birth_year < 18 || (p.foreign.is_some() && arrival_year > year) {
                    continue;
                }
                let trend = 1.0 - 0.025 * f64::from(last - year);
                let gross =
                    (p.income as f64 * trend * (0.95 + 0.1 * rng.unit())) as i64 / 100 * 100;
                let due = income_tax(
                    gross,
                    year - birth_year >= 70,
                    matches!(p.occ, Occ::Employee(_)),
                );
                let overdue = !p.keep && due > 0 && rng.chance(0.012);
                let paid = if overdue {
                    (due as f64 * 0.6 * rng.unit()) as i64
                } else {
                    due
                };
                rows.taxes.row([
                    Value::I64(p.id),
                    Value::I64(i64::from(year)),
                    Value::I64(gross),
                    Value::I64(due),
                    Value::I64(paid),
                    Value::Str(if overdue { "overdue" } else { "paid" }),
                ]);
            }
        }
    }

    /// The insurance unit of a principal insured in category 2, 3, 5 or 6, by name.
    fn unit_name(&self, b: &Block, p: &P, category: i64) -> (String, String) {
        let a = &b.addrs[p.addr];
        let c = self.city(a.city);
        let d = self.district(a.city, a.district);
        match (category, p.occ) {
            (2, Occ::Union(t)) => {
                let (zh, en) = match t {
                    0 => ("計程車駕駛員職業工會", "Taxi Drivers' Union"),
                    1 => ("美容美髮業職業工會", "Hairdressers' and Beauticians' Union"),
                    _ => ("土木建築業職業工會", "Construction Workers' Union"),
                };
                (format!("{}{zh}", c.zh), format!("{} {en}", c.en))
            }
            (3, _) => (
                format!("{}{}農會", c.zh, d.zh),
                format!("{} Farmers' Association, {}", d.en, c.en),
            ),
            _ => (
                format!("{}{}公所", c.zh, d.zh),
                format!("{} Office, {}", d.en, c.en),
            ),
        }
    }

    fn emit_insurance(&mut self, rng: &mut Rng, b: &mut Block, rows: &mut Rows) {
        let today = self.today;
        for p in &mut b.persons {
            (p.nhi_cat, p.nhi_unit_business) = match p.occ {
                Occ::Employee(e) | Occ::Owner(e) => (1, Some(e)),
                Occ::Union(_) => (2, None),
                Occ::Farmer => (3, None),
                _ => (0, None),
            };
        }
        // Who is a category 6 principal: adults without work whose spouse (or, for the
        // old, whose child) is not insured through work.
        let n = b.persons.len();
        let works =
            |b: &Block, o: Option<usize>| o.filter(|&s| (1..=3).contains(&b.persons[s].nhi_cat));
        for i in 0..n {
            let p = &b.persons[i];
            if p.nhi_cat != 0 {
                continue;
            }
            let age = age_on(p.birth, today);
            let child = age < 20 || (p.occ == Occ::Student && age < 26);
            if child && (p.father.is_some() || p.mother.is_some()) {
                continue;
            }
            if works(b, p.spouse).is_some() || works(b, p.carer).is_some() {
                continue;
            }
            let low_income = if p.featured == Some(Role::ElderlyAlone) {
                rng.chance(0.3)
            } else {
                rng.chance(0.015)
            };
            b.persons[i].nhi_cat = if low_income { 5 } else { 6 };
        }
        for i in 0..n {
            let p = &b.persons[i];
            if p.featured == Some(Role::Baby) {
                continue;
            }
            let working = matches!(p.occ, Occ::Employee(_) | Occ::Owner(_));
            if p.foreign.is_some() && !working && p.arrived > today - 183 {
                continue;
            }
            let age = age_on(p.birth, today);
            let (principal, kind) = if p.nhi_cat != 0 {
                (i, "principal")
            } else {
                // A dependant of the best-insured relative: spouse, parents, or the child an
                // old person lives with.
                let mut best: Option<usize> = None;
                for c in [p.spouse, p.father, p.mother, p.carer]
                    .into_iter()
                    .flatten()
                {
                    let cat = b.persons[c].nhi_cat;
                    if cat == 0 {
                        continue;
                    }
                    best = match best {
                        Some(x)
                            if (b.persons[x].nhi_cat, -b.persons[x].income)
                                <= (cat, -b.persons[c].income) =>
                        {
                            Some(x)
                        }
                        _ => Some(c),
                    };
                }
                match best {
                    Some(x) => (x, "dependent"),
                    None => (i, "principal"),
                }
            };
            let q = &b.persons[principal];
            let category = if q.nhi_cat == 0 { 6 } else { q.nhi_cat };
            let (unit_zh, unit_en) = if q.nhi_unit_business.is_some() {
                (None, None)
            } else {
                let (zh, en) = self.unit_name(b, q, category);
                (Some(zh), Some(en))
            };
            let since = if p.foreign.is_some() {
                if working {
                    p.arrived + rng.range(0, 14) as i32
                } else {
                    p.arrived + 183
                }
            } else if age < 18 {
                p.birth + rng.range(7, 28) as i32
            } else {
                let adult = add_years(p.birth, 18);
                (today - rng.range(30, 15 * 365) as i32).max(adult)
            }
            .min(today);
            let status = if p.foreign.is_none() && !p.keep && age >= 20 && rng.chance(0.005) {
                "suspended"
            } else {
                "insured"
            };
            rows.insurance.row([
                Value::I64(p.id),
                Value::Str(status),
                Value::I64(category),
                Value::Str(kind),
                if principal == i {
                    Value::NullInt
                } else {
                    Value::I64(q.id)
                },
                q.nhi_unit_business.into(),
                unit_zh.into(),
                unit_en.into(),
                Value::Text(iso(since)),
            ]);
        }
    }

    fn emit_schools(&mut self, rng: &mut Rng, b: &Block, rows: &mut Rows) {
        let sept1 = from_ymd(self.school_year, 9, 1);
        let year = i64::from(self.school_year);
        for p in &b.persons {
            let age = age_on(p.birth, sept1);
            if age < 2 || p.birth > sept1 {
                continue;
            }
            let a = &b.addrs[p.addr];
            let c = self.city(a.city);
            let d = self.district(a.city, a.district);
            let featured = p.featured == Some(Role::Child55);
            let elementary = |c: &City, d: &District| {
                (
                    format!("{}{}{}國民小學", c.zh, d.zh, d.school.0),
                    format!("{} Elementary School, {}, {}", d.school.1, d.en, c.en),
                )
            };
            let row = match (age, p.occ) {
                (2..=5, _) => {
                    let share = [0.55, 0.85, 0.92, 0.96][(age - 2) as usize];
                    if !(featured || rng.chance(share)) {
                        continue;
                    }
                    let (zh, en) = elementary(c, d);
                    (
                        "preschool",
                        age - 1,
                        format!("{zh}附設幼兒園"),
                        format!("Kindergarten of {en}"),
                    )
                }
                (6..=11, _) => {
                    let (zh, en) = elementary(c, d);
                    ("elementary", age - 5, zh, en)
                }
                (12..=14, _) => {
                    let owner = if c.kind == crate::places::CityKind::County {
                        "縣立"
                    } else {
                        "市立"
                    };
                    let city_en = c.en.trim_end_matches(" City").trim_end_matches(" County");
                    let prefix = if c.kind == crate::places::CityKind::County {
                        c.en.to_string()
                    } else {
                        format!("{city_en} Municipal")
                    };
                    (
                        "junior_high",
                        age - 5,
                        format!(
                            "{}{owner}{}國民中學",
                            c.zh.trim_end_matches(['市', '縣']),
                            d.school.0
                        ),
                        format!("{prefix} {} Junior High School", d.school.1),
                    )
                }
                (15..=17, _) => {
                    if !rng.chance(0.94) {
                        continue;
                    }
                    let (zh, en) = *rng.pick(c.senior_highs);
                    ("senior_high", age - 5, zh.to_string(), en.to_string())
                }
                (18..=30, Occ::Student) => {
                    let (zh, en, _) = UNIVERSITIES[self.t.universities.pick(rng)];
                    let undergraduate = if p.foreign.is_some() {
                        rng.chance(0.6) && age <= 24
                    } else {
                        age <= 21
                    };
                    if undergraduate {
                        (
                            "university",
                            (age - 17).clamp(1, 4),
                            zh.to_string(),
                            en.to_string(),
                        )
                    } else {
                        (
                            "graduate",
                            rng.range(1, 2) as i32,
                            zh.to_string(),
                            en.to_string(),
                        )
                    }
                }
                _ => continue,
            };
            rows.schools.row([
                Value::I64(p.id),
                Value::I64(year),
                Value::Str(row.0),
                Value::I64(i64::from(row.1)),
                Value::Text(row.2),
                Value::Text(row.3),
            ]);
        }
    }

    // ----- featured people -------------------------------------------------------------

    fn emit_featured(&self, b: &Block, rows: &mut Rows) {
        for &(role, i) in &b.featured {
            let p = &b.persons[i];
            let a = &b.addrs[p.addr];
            let c = self.city(a.city);
            let d = self.district(a.city, a.district);
            let addr_zh = format!("{}{}{}", c.zh, d.zh, a.zh);
            let addr_en = format!("{}, {}, {}", a.en, d.en, c.en);
            let (zh, en) = match role {
                Role::Baby => (
                    format!(
                        "{}出生，與父母同住於{addr_zh}。已完成出生登記，尚未加入全民健康保險。",
                        iso(p.birth)
                    ),
                    format!(
                        "Born on {}; lives with both parents at {addr_en}. The birth is registered; not yet enrolled in National Health Insurance.",
                        iso(p.birth)
                    ),
                ),
                Role::Child55 => {
                    let date = iso(add_months(p.birth, 66));
                    (
                        format!("將於{date}滿5歲6個月，與父母同住於{addr_zh}。"),
                        format!(
                            "Turns 5 years and 6 months old on {date}; lives with both parents at {addr_en}."
                        ),
                    )
                }
                Role::LicenceExpiring => {
                    let date = iso(add_years(p.birth, 75));
                    (
                        format!(
                            "普通小型車駕照將於{date}（75歲生日）到期，須通過體檢及認知功能測驗後換照。"
                        ),
                        format!(
                            "Ordinary car licence expires on {date}, their 75th birthday; renewal needs a medical check and a cognitive screening."
                        ),
                    )
                }
                Role::ForeignProfessional => {
                    let employer = b
                        .foreign_employer
                        .and_then(|e| b.businesses.iter().find(|x| x.id == e));
                    let date = b.cert_expiry.map(iso).unwrap_or_default();
                    let (country_zh, country_en) = NATIONALITIES[names::nationality(p.nat)].country;
                    (
                        format!(
                            "來自{country_zh}的專業人士，受僱於{}；外僑居留證將於{date}到期，準備申請就業金卡。",
                            employer.map_or("", |x| x.name_zh.as_str())
                        ),
                        format!(
                            "Professional from {country_en}, employed by {}; Alien Resident Certificate expires on {date}; about to apply for an Employment Gold Card.",
                            employer.map_or("", |x| x.name_en.as_str())
                        ),
                    )
                }
                Role::PropertySeller => {
                    let (parcel, building) = b.seller_property.clone().unwrap_or_default();
                    (
                        format!(
                            "擁有土地（地號{parcel}）及建物（建號{building}），位於{addr_zh}；無欠稅，準備出售。"
                        ),
                        format!(
                            "Owns land parcel {parcel} and building {building} at {addr_en}; no tax outstanding; about to sell."
                        ),
                    )
                }
                Role::PropertyBuyer => (
                    format!("目前租屋於{addr_zh}，準備向同市的賣方購屋。"),
                    format!(
                        "Rents at {addr_en}; about to buy the property seller's home in the same city."
                    ),
                ),
                Role::ElderlyAlone => {
                    let age = age_on(p.birth, self.today);
                    (
                        format!("{age}歲，獨居於{addr_zh}。"),
                        format!("Aged {age}, lives alone at {addr_en}."),
                    )
                }
            };
            rows.demo_people.row([
                Value::Str(role.code()),
                Value::I64(p.id),
                Value::Text(zh),
                Value::Text(en),
            ]);
        }
    }
}

/// Income tax on one person's gross income, under the 2023 rules simplified for a single
/// filer: the personal exemption (NT$92,000, or NT$138,000 from age 70), the standard
/// deduction (NT$124,000), the salary deduction (up to NT$207,000) and the progressive
/// rates of 5, 12, 20, 30 and 40 percent.
pub(crate) fn income_tax(gross: i64, seventy: bool, salaried: bool) -> i64 {
    let exemption = if seventy { 138_000 } else { 92_000 };
    let salary = if salaried { gross.min(207_000) } else { 0 };
    let net = (gross - exemption - 124_000 - salary).max(0);
    let tax = match net {
        0..=560_000 => net * 5 / 100,
        560_001..=1_260_000 => net * 12 / 100 - 39_200,
        1_260_001..=2_520_000 => net * 20 / 100 - 140_000,
        2_520_001..=4_720_000 => net * 30 / 100 - 392_000,
        _ => net * 40 / 100 - 864_000,
    };
    tax.max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tax_brackets_join_up() {
        assert_eq!(income_tax(300_000, false, true), 0);
        let at = |net: i64| income_tax(net + 92_000 + 124_000, false, false);
        assert_eq!(at(560_000), 28_000);
        assert_eq!(at(560_001), 560_001 * 12 / 100 - 39_200);
        assert_eq!(at(1_260_000), 112_000);
        assert_eq!(at(2_520_000), 364_000);
        assert_eq!(at(4_720_000), 1_024_000);
        assert_eq!(at(5_000_000), 1_136_000);
    }

    #[test]
    fn plates_are_well_formed_and_distinct() {
        let mut g = Generator::new(3, 1000, time::macros::date!(2025 - 03 - 01));
        let cars: Vec<String> = (0..2000).map(|_| g.car_plate()).collect();
        let motos: Vec<String> = (0..2000).map(|_| g.motorcycle_plate()).collect();
        for p in &cars {
            let b = p.as_bytes();
            assert!(
                b.len() == 8 && b[..3].iter().all(u8::is_ascii_uppercase) && b[3] == b'-',
                "{p}"
            );
            assert!(!p.contains('I') && !p.contains('O'));
        }
        for p in &motos {
            let b = p.as_bytes();
            assert!(
                b.len() == 7 && b[..3].iter().all(u8::is_ascii_digit) && b[3] == b'-',
                "{p}"
            );
        }
        let mut all: Vec<&String> = cars.iter().chain(&motos).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 4000);
    }

    #[test]
    fn ordinary_licences_expire_at_75_then_every_three_years() {
        let birth = from_ymd(1950, 5, 10);
        assert_eq!(
            ordinary_expiry(birth, from_ymd(2025, 1, 1)),
            from_ymd(2025, 5, 10)
        );
        assert_eq!(
            ordinary_expiry(birth, from_ymd(2025, 5, 10)),
            from_ymd(2028, 5, 10)
        );
    }

    #[test]
    fn emails_are_ascii() {
        assert_eq!(
            email("Chih-Ming", "Chen", 12),
            "chihming.chen.12@example.tw"
        );
        assert_eq!(
            email("John Paul", "Dela Cruz", 3),
            "johnpaul.delacruz.3@example.tw"
        );
    }
}
