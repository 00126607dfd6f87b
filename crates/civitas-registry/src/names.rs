//! Names: Taiwanese surnames by frequency with their customary passport romanisation, given-
//! name characters by generation and sex (Wade-Giles, as on Taiwanese passports), and
//! common names of the countries most foreign residents come from.

/// Surname, romanisation, and weight (per ten thousand people, after the Ministry of the
/// Interior's surname statistics).
pub(crate) static SURNAMES: &[(&str, &str, u32)] = &[
    ("陳", "Chen", 1112),
    ("林", "Lin", 828),
    ("黃", "Huang", 600),
    ("張", "Chang", 531),
    ("李", "Lee", 512),
    ("王", "Wang", 412),
    ("吳", "Wu", 405),
    ("劉", "Liu", 317),
    ("蔡", "Tsai", 292),
    ("楊", "Yang", 262),
    ("許", "Hsu", 231),
    ("鄭", "Cheng", 191),
    ("謝", "Hsieh", 179),
    ("郭", "Kuo", 171),
    ("洪", "Hung", 165),
    ("曾", "Tseng", 144),
    ("邱", "Chiu", 143),
    ("廖", "Liao", 142),
    ("賴", "Lai", 140),
    ("周", "Chou", 125),
    ("徐", "Hsu", 115),
    ("蘇", "Su", 114),
    ("葉", "Yeh", 110),
    ("莊", "Chuang", 102),
    ("呂", "Lu", 100),
    ("江", "Chiang", 95),
    ("何", "Ho", 85),
    ("蕭", "Hsiao", 84),
    ("羅", "Lo", 82),
    ("高", "Kao", 80),
    ("潘", "Pan", 70),
    ("簡", "Chien", 66),
    ("朱", "Chu", 65),
    ("鍾", "Chung", 64),
    ("游", "Yu", 58),
    ("彭", "Peng", 57),
    ("詹", "Chan", 56),
    ("胡", "Hu", 55),
    ("施", "Shih", 53),
    ("沈", "Shen", 50),
    ("余", "Yu", 48),
    ("盧", "Lu", 46),
    ("梁", "Liang", 44),
    ("趙", "Chao", 43),
    ("顏", "Yen", 42),
    ("柯", "Ko", 41),
    ("翁", "Weng", 40),
    ("魏", "Wei", 38),
    ("孫", "Sun", 37),
    ("戴", "Tai", 36),
];

/// A given-name character and its romanised syllable.
pub(crate) type Syllable = (&'static str, &'static str);

/// Given-name characters of men born before 1975.
pub(crate) static MALE_OLD: &[Syllable] = &[
    ("志", "Chih"),
    ("明", "Ming"),
    ("國", "Kuo"),
    ("正", "Cheng"),
    ("文", "Wen"),
    ("建", "Chien"),
    ("榮", "Jung"),
    ("德", "Te"),
    ("清", "Ching"),
    ("金", "Chin"),
    ("水", "Shui"),
    ("坤", "Kun"),
    ("輝", "Hui"),
    ("雄", "Hsiung"),
    ("勝", "Sheng"),
    ("忠", "Chung"),
    ("義", "Yi"),
    ("福", "Fu"),
    ("財", "Tsai"),
    ("順", "Shun"),
];

/// Given-name characters of men born 1975-1994.
pub(crate) static MALE_MID: &[Syllable] = &[
    ("志", "Chih"),
    ("偉", "Wei"),
    ("建", "Chien"),
    ("宏", "Hung"),
    ("俊", "Chun"),
    ("傑", "Chieh"),
    ("家", "Chia"),
    ("豪", "Hao"),
    ("冠", "Kuan"),
    ("宇", "Yu"),
    ("承", "Cheng"),
    ("翰", "Han"),
    ("柏", "Po"),
    ("彥", "Yen"),
    ("文", "Wen"),
    ("信", "Hsin"),
    ("哲", "Che"),
    ("凱", "Kai"),
    ("威", "Wei"),
    ("嘉", "Chia"),
];

/// Given-name characters of men born from 1995.
pub(crate) static MALE_NEW: &[Syllable] = &[
    ("宇", "Yu"),
    ("承", "Cheng"),
    ("翰", "Han"),
    ("睿", "Jui"),
    ("子", "Tzu"),
    ("軒", "Hsuan"),
    ("翔", "Hsiang"),
    ("霖", "Lin"),
    ("晨", "Chen"),
    ("安", "An"),
    ("宥", "Yu"),
    ("恩", "En"),
    ("祐", "Yu"),
    ("澤", "Tse"),
    ("昱", "Yu"),
    ("浩", "Hao"),
    ("柏", "Po"),
    ("品", "Pin"),
    ("彥", "Yen"),
    ("廷", "Ting"),
];

/// Given-name characters of women born before 1975.
pub(crate) static FEMALE_OLD: &[Syllable] = &[
    ("淑", "Shu"),
    ("美", "Mei"),
    ("麗", "Li"),
    ("秀", "Hsiu"),
    ("玉", "Yu"),
    ("春", "Chun"),
    ("碧", "Pi"),
    ("珠", "Chu"),
    ("蘭", "Lan"),
    ("英", "Ying"),
    ("鳳", "Feng"),
    ("梅", "Mei"),
    ("月", "Yueh"),
    ("惠", "Hui"),
    ("珍", "Chen"),
    ("貞", "Chen"),
    ("華", "Hua"),
    ("雲", "Yun"),
    ("金", "Chin"),
    ("滿", "Man"),
];

/// Given-name characters of women born 1975-1994.
pub(crate) static FEMALE_MID: &[Syllable] = &[
    ("淑", "Shu"),
    ("美", "Mei"),
    ("惠", "Hui"),
    ("玲", "Ling"),
    ("芳", "Fang"),
    ("雅", "Ya"),
    ("婷", "Ting"),
    ("怡", "Yi"),
    ("君", "Chun"),
    ("慧", "Hui"),
    ("靜", "Ching"),
    ("佩", "Pei"),
    ("欣", "Hsin"),
    ("筱", "Hsiao"),
    ("詩", "Shih"),
    ("琪", "Chi"),
    ("瑜", "Yu"),
    ("娟", "Chuan"),
    ("宜", "Yi"),
    ("庭", "Ting"),
];

/// Given-name characters of women born from 1995.
pub(crate) static FEMALE_NEW: &[Syllable] = &[
    ("涵", "Han"),
    ("萱", "Hsuan"),
    ("彤", "Tung"),
    ("妍", "Yen"),
    ("蓁", "Chen"),
    ("芸", "Yun"),
    ("心", "Hsin"),
    ("品", "Pin"),
    ("思", "Szu"),
    ("語", "Yu"),
    ("恩", "En"),
    ("晴", "Ching"),
    ("芯", "Hsin"),
    ("詩", "Shih"),
    ("宜", "Yi"),
    ("庭", "Ting"),
    ("欣", "Hsin"),
    ("筠", "Yun"),
    ("婕", "Chieh"),
    ("瑄", "Hsuan"),
];

/// Common names of one nationality, as written in passports.
pub(crate) struct Nationality {
    /// ISO 3166-1 alpha-2 code.
    pub(crate) code: &'static str,
    /// The country's name in Chinese and in English.
    pub(crate) country: (&'static str, &'static str),
    pub(crate) families: &'static [&'static str],
    pub(crate) male: &'static [&'static str],
    pub(crate) female: &'static [&'static str],
}

/// Nationalities of foreign residents.
pub(crate) static NATIONALITIES: &[Nationality] = &[
    Nationality {
        code: "VN",
        country: ("越南", "Viet Nam"),
        families: &[
            "Nguyen", "Tran", "Le", "Pham", "Hoang", "Huynh", "Phan", "Vu", "Vo", "Dang",
        ],
        male: &[
            "Van Hung",
            "Van Nam",
            "Duc Anh",
            "Minh Tuan",
            "Quang Huy",
            "Van Long",
        ],
        female: &[
            "Thi Lan",
            "Thi Hoa",
            "Thi Mai",
            "Thu Trang",
            "Ngoc Anh",
            "Thi Huong",
        ],
    },
    Nationality {
        code: "ID",
        country: ("印尼", "Indonesia"),
        families: &[
            "Santoso",
            "Wijaya",
            "Saputra",
            "Hidayat",
            "Setiawan",
            "Kurniawan",
            "Susanto",
            "Gunawan",
        ],
        male: &["Budi", "Agus", "Eko", "Andi", "Joko", "Rizki"],
        female: &["Siti", "Dewi", "Sri", "Rina", "Putri", "Nur"],
    },
    Nationality {
        code: "PH",
        country: ("菲律賓", "the Philippines"),
        families: &[
            "Santos",
            "Reyes",
            "Cruz",
            "Bautista",
            "Garcia",
            "Mendoza",
            "Ramos",
            "Aquino",
            "Villanueva",
            "Flores",
        ],
        male: &["Jose", "Mark", "John Paul", "Michael", "Jerome", "Ramon"],
        female: &["Maria", "Jennifer", "Angelica", "Kristine", "Joy", "Rowena"],
    },
    Nationality {
        code: "TH",
        country: ("泰國", "Thailand"),
        families: &[
            "Saetang",
            "Srisuk",
            "Wongsawat",
            "Boonmee",
            "Suksawat",
            "Chaiyaporn",
            "Thongdee",
            "Kaewmanee",
        ],
        male: &["Somchai", "Niran", "Kittisak", "Anan", "Prasert", "Wichai"],
        female: &["Malee", "Siriporn", "Nattaya", "Ratana", "Kanya", "Suda"],
    },
    Nationality {
        code: "JP",
        country: ("日本", "Japan"),
        families: &[
            "Sato",
            "Suzuki",
            "Takahashi",
            "Tanaka",
            "Watanabe",
            "Ito",
            "Yamamoto",
            "Nakamura",
            "Kobayashi",
            "Kato",
        ],
        male: &["Hiroshi", "Takeshi", "Kenji", "Haruto", "Sota", "Daiki"],
        female: &["Yuki", "Aoi", "Sakura", "Keiko", "Naoko", "Yui"],
    },
    Nationality {
        code: "US",
        country: ("美國", "the United States"),
        families: &[
            "Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Garcia",
            "Wilson", "Anderson",
        ],
        male: &[
            "James",
            "Michael",
            "David",
            "Daniel",
            "Matthew",
            "Christopher",
        ],
        female: &["Emily", "Sarah", "Jessica", "Ashley", "Jennifer", "Megan"],
    },
    Nationality {
        code: "IN",
        country: ("印度", "India"),
        families: &[
            "Sharma", "Patel", "Singh", "Kumar", "Gupta", "Reddy", "Iyer", "Nair", "Rao", "Mehta",
        ],
        male: &["Aarav", "Rahul", "Vikram", "Arjun", "Rohan", "Sanjay"],
        female: &["Priya", "Ananya", "Deepa", "Kavya", "Neha", "Pooja"],
    },
    Nationality {
        code: "DE",
        country: ("德國", "Germany"),
        families: &[
            "Mueller",
            "Schmidt",
            "Schneider",
            "Fischer",
            "Weber",
            "Meyer",
            "Wagner",
            "Becker",
            "Schulz",
            "Hoffmann",
        ],
        male: &["Lukas", "Jonas", "Felix", "Thomas", "Stefan", "Maximilian"],
        female: &["Anna", "Lena", "Sophie", "Katrin", "Julia", "Laura"],
    },
    Nationality {
        code: "FR",
        country: ("法國", "France"),
        families: &[
            "Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand",
            "Leroy", "Moreau",
        ],
        male: &["Louis", "Gabriel", "Hugo", "Nicolas", "Julien", "Antoine"],
        female: &["Lea", "Chloe", "Camille", "Julie", "Manon", "Claire"],
    },
    Nationality {
        code: "GB",
        country: ("英國", "the United Kingdom"),
        families: &[
            "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Evans", "Davies", "Thomas",
            "Roberts",
        ],
        male: &["Oliver", "George", "Harry", "James", "William", "Thomas"],
        female: &["Olivia", "Amelia", "Emily", "Charlotte", "Sophie", "Grace"],
    },
];

/// Index of a nationality in [`NATIONALITIES`].
pub(crate) fn nationality(code: &str) -> usize {
    NATIONALITIES
        .iter()
        .position(|n| n.code == code)
        .unwrap_or(0)
}
