//! The texts of the OpenID Connect pages (consent, logout, refusals), in both languages.

use crate::i18n::Lang;

/// Texts of the OpenID Connect pages in one language.
pub struct OidcTexts {
    pub consent_title: &'static str,
    pub consent_wants: &'static str,
    pub consent_signed_in_as: &'static str,
    pub consent_receives: &'static str,
    pub scope_openid: &'static str,
    pub scope_profile: &'static str,
    pub scope_email: &'static str,
    pub scope_phone: &'static str,
    pub scope_offline_access: &'static str,
    pub consent_return_to: &'static str,
    pub consent_remember: &'static str,
    pub allow: &'static str,
    pub deny: &'static str,
    pub refused_title: &'static str,
    pub refused_text: &'static str,
    pub refused_detail: &'static str,
    pub logout_title: &'static str,
    pub logout_lead: &'static str,
    pub logout_from: &'static str,
    pub logout_button: &'static str,
    pub logout_stay: &'static str,
    pub signed_out_title: &'static str,
    pub signed_out_text: &'static str,
}

impl OidcTexts {
    /// The label of what a scope releases.
    pub fn scope_label(&self, scope: &str) -> Option<&'static str> {
        match scope {
            "openid" => Some(self.scope_openid),
            "profile" => Some(self.scope_profile),
            "email" => Some(self.scope_email),
            "phone" => Some(self.scope_phone),
            "offline_access" => Some(self.scope_offline_access),
            _ => None,
        }
    }
}

/// The texts in `lang`.
pub fn oidc_texts(lang: Lang) -> &'static OidcTexts {
    match lang {
        Lang::Zh => &ZH,
        Lang::En => &EN,
    }
}

static ZH: OidcTexts = OidcTexts {
    consent_title: "允許應用程式使用您的資料？",
    consent_wants: "想要用您的 Civitas 帳號讓您登入。",
    consent_signed_in_as: "您目前登入的身分",
    consent_receives: "這個應用程式會取得",
    scope_openid: "您在這個應用程式的專屬識別碼（不是身分證字號）",
    scope_profile: "您的姓名與慣用語言",
    scope_email: "您的電子郵件地址",
    scope_phone: "您的電話號碼",
    scope_offline_access: "在您離開後仍可繼續存取，直到您登出",
    consent_return_to: "完成後會回到",
    consent_remember: "Civitas 會記住您的選擇，下次同一個應用程式要同樣的資料時不再詢問。每次提供資料都會記錄在公開帳本中。",
    allow: "允許",
    deny: "拒絕",
    refused_title: "無法繼續登入",
    refused_text: "把您帶到這裡的應用程式送出的要求無法受理，因此沒有提供任何資料，也不會把您送回那個應用程式。請回到原來的網站再試一次；如果問題持續，請告訴該網站的管理者下面的說明。",
    refused_detail: "技術說明",
    logout_title: "要登出 Civitas 嗎？",
    logout_lead: "一個應用程式要求您登出 Civitas。登出後，這次登入給各應用程式的授權也會一併失效。",
    logout_from: "提出要求的應用程式",
    logout_button: "登出",
    logout_stay: "保持登入，回到首頁",
    signed_out_title: "您已登出",
    signed_out_text: "您已經登出 Civitas，這次登入給應用程式的授權都已失效。",
};

static EN: OidcTexts = OidcTexts {
    consent_title: "Let an application use your details?",
    consent_wants: "wants to sign you in with your Civitas account.",
    consent_signed_in_as: "You are signed in as",
    consent_receives: "It will receive",
    scope_openid: "An identifier for you at this application only (not your identification number)",
    scope_profile: "Your name and preferred language",
    scope_email: "Your e-mail address",
    scope_phone: "Your phone number",
    scope_offline_access: "Continued access while you are away, until you sign out",
    consent_return_to: "Afterwards you return to",
    consent_remember: "Civitas remembers your choice and will not ask again when this application asks for the same details. Every time details are given, it is recorded in the public ledger.",
    allow: "Allow",
    deny: "Deny",
    refused_title: "Sign-in cannot continue",
    refused_text: "The application that sent you here made a request Civitas cannot accept, so nothing was shared and you are not sent back to it. Go back to the site you came from and try again; if it keeps happening, tell that site's administrators what is written below.",
    refused_detail: "Technical details",
    logout_title: "Sign out of Civitas?",
    logout_lead: "An application asks you to sign out of Civitas. Signing out also ends what applications were allowed through this sign-in.",
    logout_from: "The application asking",
    logout_button: "Sign out",
    logout_stay: "Stay signed in and go to the home page",
    signed_out_title: "You are signed out",
    signed_out_text: "You have signed out of Civitas, and what applications were allowed through that sign-in has ended.",
};
