//! The two languages of the pages, zh-TW (default) and English, and every text they show.

use axum::http::HeaderMap;

/// A language the pages are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// Traditional Chinese as used in Taiwan; the default.
    Zh,
    /// English.
    En,
}

/// The cookie that remembers a person's language.
pub const LANG_COOKIE: &str = "civitas_lang";

impl Lang {
    /// The language chosen by the `civitas_lang` cookie, else zh-TW.
    pub fn from_headers(headers: &HeaderMap) -> Lang {
        crate::auth::cookie(headers, LANG_COOKIE)
            .and_then(Lang::from_code)
            .unwrap_or(Lang::Zh)
    }

    /// Parses `zh-TW` or `en`.
    pub fn from_code(code: &str) -> Option<Lang> {
        match code {
            "zh-TW" | "zh" => Some(Lang::Zh),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// Code used in URLs and the cookie.
    pub fn code(self) -> &'static str {
        match self {
            Lang::Zh => "zh-TW",
            Lang::En => "en",
        }
    }

    /// BCP 47 tag for the `lang` attribute.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::Zh => "zh-Hant-TW",
            Lang::En => "en",
        }
    }

    /// The other language, offered by the switch.
    pub fn other(self) -> Lang {
        match self {
            Lang::Zh => Lang::En,
            Lang::En => Lang::Zh,
        }
    }

    /// Every text in this language.
    pub fn texts(self) -> &'static Texts {
        match self {
            Lang::Zh => &ZH,
            Lang::En => &EN,
        }
    }

    /// Picks the text of this language from a pair.
    pub fn pick<'a>(self, zh: &'a str, en: &'a str) -> &'a str {
        match self {
            Lang::Zh => zh,
            Lang::En => en,
        }
    }
}

/// The fixed texts of the pages in one language.
pub struct Texts {
    pub site_name: &'static str,
    pub skip_link: &'static str,
    pub nav_label: &'static str,
    pub nav_home: &'static str,
    pub nav_agencies: &'static str,
    pub nav_api: &'static str,
    pub switch_label: &'static str,
    pub language_name: &'static str,
    pub footer_about: &'static str,
    pub footer_status: &'static str,
    pub footer_openapi: &'static str,
    pub home_title: &'static str,
    pub home_lead: &'static str,
    pub home_country_title: &'static str,
    pub home_not_seeded: &'static str,
    pub stat_people: &'static str,
    pub stat_households: &'static str,
    pub stat_businesses: &'static str,
    pub stat_agencies: &'static str,
    pub home_agencies_title: &'static str,
    pub home_agencies_text: &'static str,
    pub home_developers_title: &'static str,
    pub home_developers_text: &'static str,
    pub agencies_title: &'static str,
    pub agencies_lead: &'static str,
    pub agency_parent: &'static str,
    pub agency_code: &'static str,
    pub agency_kind: &'static str,
    pub agency_website: &'static str,
    pub agency_services: &'static str,
    pub agency_staff: &'static str,
    pub agency_staff_none: &'static str,
    pub role_caseworker: &'static str,
    pub role_supervisor: &'static str,
    pub role_agency_admin: &'static str,
    pub kind_ministry: &'static str,
    pub kind_agency: &'static str,
    pub kind_operator: &'static str,
    pub back_to_agencies: &'static str,
    pub not_found_title: &'static str,
    pub not_found_text: &'static str,
    pub error_title: &'static str,
    pub error_text: &'static str,
    pub form_expired_title: &'static str,
    pub form_expired_text: &'static str,
    pub forbidden_title: &'static str,
    pub forbidden_text: &'static str,
}

static ZH: Texts = Texts {
    site_name: "Civitas 數位政府",
    skip_link: "跳到主要內容",
    nav_label: "主選單",
    nav_home: "首頁",
    nav_agencies: "政府機關",
    nav_api: "開發者 API",
    switch_label: "Switch to English",
    language_name: "English",
    footer_about: "Civitas 是開源的數位政府平台：一次登入、資料只給一次、每次使用都可查證。",
    footer_status: "系統狀態",
    footer_openapi: "OpenAPI 文件",
    home_title: "政府服務，一站完成",
    home_lead: "在同一個地方找到各機關的服務。政府已經有的資料，不必再填一次。",
    home_country_title: "示範國家",
    home_not_seeded: "這個站台還沒有載入示範資料。",
    stat_people: "位居民",
    stat_households: "戶",
    stat_businesses: "家企業",
    stat_agencies: "個機關",
    home_agencies_title: "政府機關",
    home_agencies_text: "查看各機關負責的業務與提供的服務。",
    home_developers_title: "開發者",
    home_developers_text: "以 OpenAPI 描述的公開 API，可以直接在瀏覽器中試用。",
    agencies_title: "政府機關",
    agencies_lead: "這些機關在本平台上提供服務並交換資料。",
    agency_parent: "上級機關",
    agency_code: "機關代碼",
    agency_kind: "類型",
    agency_website: "網站",
    agency_services: "主要業務",
    agency_staff: "平台上的工作人員",
    agency_staff_none: "這個機關在平台上還沒有工作人員帳號。",
    role_caseworker: "承辦人",
    role_supervisor: "主管",
    role_agency_admin: "機關管理者",
    kind_ministry: "部會",
    kind_agency: "機關",
    kind_operator: "平台營運者",
    back_to_agencies: "回到所有機關",
    not_found_title: "找不到這個頁面",
    not_found_text: "網址可能打錯了，或頁面已經移走。",
    error_title: "系統發生問題",
    error_text: "請稍後再試。回報問題時請提供下面的請求編號。",
    form_expired_title: "表單已經過期",
    form_expired_text: "為了保護您的帳號，這個表單無法送出。請回到上一頁，重新整理後再試一次。",
    forbidden_title: "您沒有權限使用這個頁面",
    forbidden_text: "這個頁面只開放給平台營運者。如果您認為應該可以使用，請聯絡您的機關管理者。",
};

static EN: Texts = Texts {
    site_name: "Civitas Digital Government",
    skip_link: "Skip to main content",
    nav_label: "Main menu",
    nav_home: "Home",
    nav_agencies: "Agencies",
    nav_api: "Developer API",
    switch_label: "切換為中文",
    language_name: "中文",
    footer_about: "Civitas is an open-source digital-government platform: one sign-in, data given once, every use verifiable.",
    footer_status: "System status",
    footer_openapi: "OpenAPI document",
    home_title: "Government services in one place",
    home_lead: "Find every agency's services in one place. What the government already knows, you never type again.",
    home_country_title: "The demo country",
    home_not_seeded: "This site has no demo data loaded.",
    stat_people: "residents",
    stat_households: "households",
    stat_businesses: "businesses",
    stat_agencies: "agencies",
    home_agencies_title: "Agencies",
    home_agencies_text: "See what each agency is responsible for and the services it offers.",
    home_developers_title: "Developers",
    home_developers_text: "A public API described with OpenAPI, which you can try in the browser.",
    agencies_title: "Agencies",
    agencies_lead: "These agencies offer services and exchange data on this platform.",
    agency_parent: "Supervised by",
    agency_code: "Agency code",
    agency_kind: "Type",
    agency_website: "Website",
    agency_services: "What it does",
    agency_staff: "Staff on the platform",
    agency_staff_none: "This agency has no staff accounts on the platform yet.",
    role_caseworker: "Caseworkers",
    role_supervisor: "Supervisors",
    role_agency_admin: "Agency administrators",
    kind_ministry: "Ministry",
    kind_agency: "Agency",
    kind_operator: "Platform operator",
    back_to_agencies: "Back to all agencies",
    not_found_title: "Page not found",
    not_found_text: "The address may be mistyped, or the page has moved.",
    error_title: "Sorry, something went wrong",
    error_text: "Please try again later. If you report this, quote the request number below.",
    form_expired_title: "This form has expired",
    form_expired_text: "To protect your account, this form could not be sent. Go back, reload the page and try again.",
    forbidden_title: "You cannot use this page",
    forbidden_text: "This page is for platform operators. If you think you should have access, ask your agency administrator.",
};
