//! The data items a person's data can be shared by: named attributes of the base
//! registries (`population.name`, `tax.income`), each read through one of the registry's
//! services (see [`crate::services`]). Data agreements list these items; a release reads
//! them through the exchange and passes on only the fields an item names.

/// One data item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute {
    /// `registry.attribute`, as agreements name it.
    pub item: &'static str,
    /// The registry service it is read from (its service code).
    pub registry: &'static str,
    /// The read that gives it, with `{id}` for the person's national ID.
    pub path: &'static str,
    /// The fields of that read's record it is; empty for the whole answer (a list).
    pub fields: &'static [&'static str],
    /// What it is, in English.
    pub title_en: &'static str,
    /// What it is, in Traditional Chinese.
    pub title_zh: &'static str,
}

const fn item(
    item: &'static str,
    registry: &'static str,
    path: &'static str,
    fields: &'static [&'static str],
    title_en: &'static str,
    title_zh: &'static str,
) -> Attribute {
    Attribute {
        item,
        registry,
        path,
        fields,
        title_en,
        title_zh,
    }
}

/// Every data item of the base registries.
pub static ATTRIBUTES: &[Attribute] = &[
    item(
        "population.name",
        "population",
        "/persons/{id}",
        &[
            "family_name",
            "given_name",
            "family_name_latin",
            "given_name_latin",
        ],
        "Name",
        "姓名",
    ),
    item(
        "population.sex",
        "population",
        "/persons/{id}",
        &["sex"],
        "Sex",
        "性別",
    ),
    item(
        "population.birth_date",
        "population",
        "/persons/{id}",
        &["birth_date"],
        "Date of birth",
        "出生日期",
    ),
    item(
        "population.nationality",
        "population",
        "/persons/{id}",
        &["nationality"],
        "Nationality",
        "國籍",
    ),
    item(
        "population.address",
        "population",
        "/persons/{id}",
        &["city_code", "district_code", "street_zh", "street_en"],
        "Registered address",
        "戶籍地址",
    ),
    item(
        "population.household",
        "population",
        "/persons/{id}/household",
        &[],
        "Household members",
        "戶內人口",
    ),
    item(
        "population.children",
        "population",
        "/persons/{id}/children",
        &[],
        "Children",
        "子女",
    ),
    item(
        "vehicles.licences",
        "vehicles",
        "/persons/{id}/licences",
        &[],
        "Driving licences",
        "駕照",
    ),
    item(
        "vehicles.vehicles",
        "vehicles",
        "/persons/{id}/vehicles",
        &[],
        "Vehicles owned",
        "名下車輛",
    ),
    item(
        "land.parcels",
        "land",
        "/persons/{id}/parcels",
        &[],
        "Land parcels owned",
        "名下土地",
    ),
    item(
        "land.buildings",
        "land",
        "/persons/{id}/buildings",
        &[],
        "Buildings owned",
        "名下建物",
    ),
    item(
        "tax.income",
        "tax",
        "/persons/{id}/income-tax",
        &[],
        "Income tax by year",
        "綜合所得稅",
    ),
    item(
        "insurance.status",
        "insurance",
        "/persons/{id}",
        &[
            "status",
            "category",
            "insured_type",
            "unit_name_zh",
            "unit_name_en",
            "insured_since",
        ],
        "Health insurance",
        "健保投保資料",
    ),
    item(
        "education.enrolments",
        "education",
        "/persons/{id}/enrolments",
        &[],
        "School enrolments",
        "學籍",
    ),
    item(
        "residents.certificate",
        "residents",
        "/persons/{id}/certificate",
        &["certificate_no", "purpose", "issued", "expires"],
        "Resident certificate",
        "居留證",
    ),
];

/// The data item named `item` (`registry.attribute`).
pub fn attribute(item: &str) -> Option<&'static Attribute> {
    ATTRIBUTES.iter().find(|a| a.item == item)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_is_read_by_a_personal_read_of_its_registry() {
        for a in ATTRIBUTES {
            let service = crate::services::service(a.registry).expect(a.item);
            assert!(service.personal, "{}", a.item);
            assert!(
                service.has_read(a.path),
                "{} has no read {}",
                a.item,
                a.path
            );
            assert!(
                a.item.starts_with(&format!("{}.", a.registry)),
                "{}",
                a.item
            );
        }
        assert_eq!(attribute("tax.income").unwrap().registry, "tax");
        assert!(attribute("tax").is_none());
    }
}
