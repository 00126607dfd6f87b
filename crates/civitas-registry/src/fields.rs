//! What each field of the registers' answers is called, in Chinese and English, for the
//! pages and documents that show a person their records ("My data"). The answers keep the
//! field names; these are only for reading.

/// The name of field `field` as (Chinese, English), when it is one the registers answer with.
pub fn label(field: &str) -> Option<(&'static str, &'static str)> {
    FIELDS
        .iter()
        .find(|(f, _, _)| *f == field)
        .map(|(_, zh, en)| (*zh, *en))
}

const FIELDS: &[(&str, &str, &str)] = &[
    ("national_id", "身分證統一編號", "National ID"),
    ("family_name", "姓", "Family name"),
    ("given_name", "名", "Given name"),
    ("family_name_latin", "姓（外文）", "Family name (Latin)"),
    ("given_name_latin", "名（外文）", "Given name (Latin)"),
    ("sex", "性別", "Sex"),
    ("birth_date", "出生日期", "Date of birth"),
    ("death_date", "死亡日期", "Date of death"),
    ("nationality", "國籍", "Nationality"),
    ("household_no", "戶號", "Household number"),
    ("city_code", "縣市代碼", "City code"),
    ("district_code", "鄉鎮市區代碼", "District code"),
    ("street_zh", "地址", "Address (Chinese)"),
    ("street_en", "地址（英文）", "Address (English)"),
    ("role", "角色", "Role"),
    ("relation", "關係", "Relation"),
    ("class", "類別", "Class"),
    ("class_zh", "類別（中文）", "Class (Chinese)"),
    ("licence_no", "證號", "Licence number"),
    ("issued", "發證日期", "Issued"),
    ("expires", "到期日", "Expires"),
    ("status", "狀態", "Status"),
    ("plate", "車牌號碼", "Plate"),
    ("make", "廠牌", "Make"),
    ("model", "車型", "Model"),
    ("model_year", "年份", "Model year"),
    ("kind", "種類", "Kind"),
    ("inspection_due", "定期檢驗日", "Inspection due"),
    ("registered", "登記日期", "Registered"),
    (
        "owner_business_ubn",
        "所有人統一編號",
        "Owner's business number",
    ),
    ("parcel_no", "地號", "Parcel number"),
    ("section_zh", "地段", "Section (Chinese)"),
    ("section_en", "地段（英文）", "Section (English)"),
    ("lot_no", "地段地號", "Lot number"),
    ("area_m2", "面積（平方公尺）", "Area (m²)"),
    ("zoning", "使用分區", "Zoning"),
    (
        "value_per_m2",
        "公告土地現值（每平方公尺）",
        "Announced value per m²",
    ),
    ("building_no", "建號", "Building number"),
    ("floor_area_m2", "樓地板面積（平方公尺）", "Floor area (m²)"),
    ("main_use", "主要用途", "Main use"),
    ("year_built", "建築完成年", "Year built"),
    ("tax_year", "稅務年度", "Tax year"),
    ("gross_income", "綜合所得總額", "Gross income"),
    ("tax_due", "應納稅額", "Tax due"),
    ("tax_paid", "已繳稅額", "Tax paid"),
    ("ubn", "統一編號", "Business number"),
    ("name_zh", "名稱", "Name (Chinese)"),
    ("name_en", "名稱（英文）", "Name (English)"),
    ("capital", "資本額", "Capital"),
    ("industry_zh", "行業", "Industry (Chinese)"),
    ("industry_en", "行業（英文）", "Industry (English)"),
    (
        "principal_national_id",
        "負責人身分證統一編號",
        "Principal's national ID",
    ),
    ("employer_ubn", "雇主統一編號", "Employer's business number"),
    ("insured_type", "投保類別", "Insured as"),
    ("insured_since", "投保日期", "Insured since"),
    ("unit_name_zh", "投保單位", "Insuring unit (Chinese)"),
    (
        "unit_name_en",
        "投保單位（英文）",
        "Insuring unit (English)",
    ),
    ("school_name_zh", "學校", "School (Chinese)"),
    ("school_name_en", "學校（英文）", "School (English)"),
    ("school_year", "學年度", "School year"),
    ("level", "學制", "Level"),
    ("grade", "年級", "Grade"),
    ("certificate_no", "證號", "Certificate number"),
    ("purpose", "目的", "Purpose"),
    ("category", "類別", "Category"),
];

#[cfg(test)]
mod tests {
    /// Every field a register answers with has a name for people.
    #[test]
    fn every_field_the_registers_answer_with_has_a_label() {
        for service in crate::services::SERVICES {
            for read in service.reads {
                let select = read.sql.split(" FROM ").next().unwrap_or_default();
                let columns = select.trim_start_matches("SELECT ");
                for column in columns.split(", ") {
                    let name = column.rsplit(" AS ").next().unwrap_or(column);
                    let name = name.rsplit('.').next().unwrap_or(name).trim();
                    assert!(
                        super::label(name).is_some(),
                        "{}: no label for {name}",
                        service.code
                    );
                }
            }
        }
    }
}
