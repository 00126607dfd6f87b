//! Taiwan's 22 cities and counties, a handful of real districts in each with real streets,
//! and their schools. Codes are stable: a city's code is the letter that starts the
//! national identification numbers first registered there, a district's code is the city
//! letter followed by the district's two-digit position in its list below (`A01` is
//! Da'an District, Taipei City). Append new districts at the end of a list, never reorder.

/// The tier of local government.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CityKind {
    /// 直轄市, special municipality.
    Special,
    /// 市, provincial city.
    City,
    /// 縣, county.
    County,
}

impl CityKind {
    pub(crate) fn code(self) -> &'static str {
        match self {
            CityKind::Special => "special_municipality",
            CityKind::City => "city",
            CityKind::County => "county",
        }
    }
}

/// A street: Chinese and English names, and the range of its numbered sections (段),
/// `(0, 0)` when it has none.
pub(crate) type Street = (&'static str, &'static str, u8, u8);

/// A district (區, or 市/鎮/鄉 in counties).
pub(crate) struct District {
    pub(crate) zh: &'static str,
    pub(crate) en: &'static str,
    /// Thousands of residents, for weighting.
    pub(crate) weight: u32,
    /// The name its neighbourhood schools carry, Chinese and English.
    pub(crate) school: (&'static str, &'static str),
    pub(crate) streets: &'static [Street],
}

/// A city or county.
pub(crate) struct City {
    pub(crate) letter: char,
    pub(crate) zh: &'static str,
    pub(crate) en: &'static str,
    pub(crate) kind: CityKind,
    /// Thousands of residents, for weighting.
    pub(crate) weight: u32,
    /// Typical announced land value in NT$ per m² for residential land in its centre.
    pub(crate) land_value: u32,
    /// Senior high schools, Chinese and English.
    pub(crate) senior_highs: &'static [(&'static str, &'static str)],
    pub(crate) districts: &'static [District],
}

impl City {
    /// Whether most homes are flats in multi-storey buildings.
    pub(crate) fn urban(&self) -> bool {
        self.kind != CityKind::County
    }
}

macro_rules! d {
    ($zh:expr, $en:expr, $w:expr, ($sz:expr, $se:expr), [$($st:expr),* $(,)?]) => {
        District { zh: $zh, en: $en, weight: $w, school: ($sz, $se), streets: &[$($st),*] }
    };
}

/// Every city and county, in the order of their letters.
pub(crate) static CITIES: &[City] = &[
    City {
        letter: 'A',
        zh: "臺北市",
        en: "Taipei City",
        kind: CityKind::Special,
        weight: 2490,
        land_value: 420_000,
        senior_highs: &[
            (
                "臺北市立松山高級中學",
                "Taipei Municipal Songshan Senior High School",
            ),
            (
                "國立臺灣師範大學附屬高級中學",
                "The Affiliated Senior High School of National Taiwan Normal University",
            ),
        ],
        districts: &[
            d!(
                "大安區",
                "Da'an District",
                300,
                ("大安", "Da'an"),
                [
                    ("忠孝東路", "Zhongxiao E. Rd.", 3, 4),
                    ("復興南路", "Fuxing S. Rd.", 1, 2),
                    ("和平東路", "Heping E. Rd.", 1, 3),
                    ("新生南路", "Xinsheng S. Rd.", 1, 3)
                ]
            ),
            d!(
                "信義區",
                "Xinyi District",
                210,
                ("信義", "Xinyi"),
                [
                    ("松仁路", "Songren Rd.", 0, 0),
                    ("基隆路", "Keelung Rd.", 1, 2),
                    ("忠孝東路", "Zhongxiao E. Rd.", 5, 5),
                    ("吳興街", "Wuxing St.", 0, 0)
                ]
            ),
            d!(
                "中山區",
                "Zhongshan District",
                220,
                ("中山", "Zhongshan"),
                [
                    ("中山北路", "Zhongshan N. Rd.", 1, 3),
                    ("南京東路", "Nanjing E. Rd.", 1, 3),
                    ("民生東路", "Minsheng E. Rd.", 1, 3),
                    ("林森北路", "Linsen N. Rd.", 0, 0)
                ]
            ),
            d!(
                "士林區",
                "Shilin District",
                270,
                ("士林", "Shilin"),
                [
                    ("中正路", "Zhongzheng Rd.", 0, 0),
                    ("文林路", "Wenlin Rd.", 0, 0),
                    ("中山北路", "Zhongshan N. Rd.", 5, 7),
                    ("天母西路", "Tianmu W. Rd.", 0, 0)
                ]
            ),
            d!(
                "內湖區",
                "Neihu District",
                280,
                ("內湖", "Neihu"),
                [
                    ("內湖路", "Neihu Rd.", 1, 2),
                    ("成功路", "Chenggong Rd.", 2, 5),
                    ("瑞光路", "Ruiguang Rd.", 0, 0)
                ]
            ),
            d!(
                "文山區",
                "Wenshan District",
                260,
                ("木柵", "Muzha"),
                [
                    ("木柵路", "Muzha Rd.", 1, 4),
                    ("興隆路", "Xinglong Rd.", 1, 4),
                    ("羅斯福路", "Roosevelt Rd.", 5, 6)
                ]
            ),
            d!(
                "北投區",
                "Beitou District",
                240,
                ("北投", "Beitou"),
                [
                    ("中和街", "Zhonghe St.", 0, 0),
                    ("石牌路", "Shipai Rd.", 1, 2),
                    ("光明路", "Guangming Rd.", 0, 0)
                ]
            ),
            d!(
                "萬華區",
                "Wanhua District",
                170,
                ("老松", "Laosong"),
                [
                    ("西園路", "Xiyuan Rd.", 1, 2),
                    ("康定路", "Kangding Rd.", 0, 0),
                    ("萬大路", "Wanda Rd.", 0, 0)
                ]
            ),
            d!(
                "松山區",
                "Songshan District",
                190,
                ("松山", "Songshan"),
                [
                    ("八德路", "Bade Rd.", 4, 4),
                    ("南京東路", "Nanjing E. Rd.", 4, 5),
                    ("民生東路", "Minsheng E. Rd.", 4, 5)
                ]
            ),
            d!(
                "中正區",
                "Zhongzheng District",
                150,
                ("南門", "Nanmen"),
                [
                    ("羅斯福路", "Roosevelt Rd.", 1, 3),
                    ("重慶南路", "Chongqing S. Rd.", 1, 3),
                    ("南昌路", "Nanchang Rd.", 1, 2)
                ]
            ),
            d!(
                "南港區",
                "Nangang District",
                115,
                ("南港", "Nangang"),
                [
                    ("南港路", "Nangang Rd.", 1, 3),
                    ("忠孝東路", "Zhongxiao E. Rd.", 6, 7),
                    ("研究院路", "Yanjiuyuan Rd.", 1, 2)
                ]
            ),
            d!(
                "大同區",
                "Datong District",
                120,
                ("大龍", "Dalong"),
                [
                    ("承德路", "Chengde Rd.", 1, 3),
                    ("民權西路", "Minquan W. Rd.", 0, 0),
                    ("重慶北路", "Chongqing N. Rd.", 1, 3)
                ]
            ),
        ],
    },
    City {
        letter: 'B',
        zh: "臺中市",
        en: "Taichung City",
        kind: CityKind::Special,
        weight: 2850,
        land_value: 85_000,
        senior_highs: &[
            (
                "國立中興大學附屬高級中學",
                "National Chung Hsing University Affiliated Senior High School",
            ),
            (
                "臺中市立文華高級中等學校",
                "Taichung Municipal Wenhua Senior High School",
            ),
        ],
        districts: &[
            d!(
                "西屯區",
                "Xitun District",
                230,
                ("西屯", "Xitun"),
                [
                    ("臺灣大道", "Taiwan Blvd.", 3, 4),
                    ("文心路", "Wenxin Rd.", 1, 3),
                    ("市政路", "Shizheng Rd.", 0, 0),
                    ("福科路", "Fuke Rd.", 0, 0)
                ]
            ),
            d!(
                "北屯區",
                "Beitun District",
                300,
                ("北屯", "Beitun"),
                [
                    ("崇德路", "Chongde Rd.", 2, 3),
                    ("文心路", "Wenxin Rd.", 4, 4),
                    ("松竹路", "Songzhu Rd.", 1, 2)
                ]
            ),
            d!(
                "南屯區",
                "Nantun District",
                180,
                ("南屯", "Nantun"),
                [
                    ("公益路", "Gongyi Rd.", 2, 2),
                    ("五權西路", "Wuquan W. Rd.", 2, 3),
                    ("黎明路", "Liming Rd.", 1, 2)
                ]
            ),
            d!(
                "北區",
                "North District",
                140,
                ("健行", "Jianxing"),
                [
                    ("三民路", "Sanmin Rd.", 3, 3),
                    ("健行路", "Jianxing Rd.", 0, 0),
                    ("五權路", "Wuquan Rd.", 0, 0)
                ]
            ),
            d!(
                "西區",
                "West District",
                110,
                ("大同", "Datong"),
                [
                    ("美村路", "Meicun Rd.", 1, 2),
                    ("五權西路", "Wuquan W. Rd.", 1, 1),
                    ("民權路", "Minquan Rd.", 0, 0)
                ]
            ),
            d!(
                "大里區",
                "Dali District",
                210,
                ("大里", "Dali"),
                [
                    ("中興路", "Zhongxing Rd.", 1, 2),
                    ("國光路", "Guoguang Rd.", 1, 2),
                    ("德芳路", "Defang Rd.", 1, 3)
                ]
            ),
            d!(
                "豐原區",
                "Fengyuan District",
                165,
                ("豐原", "Fengyuan"),
                [
                    ("中正路", "Zhongzheng Rd.", 0, 0),
                    ("豐原大道", "Fengyuan Blvd.", 1, 7),
                    ("圓環東路", "Yuanhuan E. Rd.", 0, 0)
                ]
            ),
            d!(
                "太平區",
                "Taiping District",
                195,
                ("太平", "Taiping"),
                [
                    ("中山路", "Zhongshan Rd.", 1, 4),
                    ("樹孝路", "Shuxiao Rd.", 0, 0),
                    ("永平路", "Yongping Rd.", 0, 0)
                ]
            ),
        ],
    },
    City {
        letter: 'C',
        zh: "基隆市",
        en: "Keelung City",
        kind: CityKind::City,
        weight: 360,
        land_value: 40_000,
        senior_highs: &[("國立基隆高級中學", "National Keelung Senior High School")],
        districts: &[
            d!(
                "仁愛區",
                "Ren'ai District",
                40,
                ("仁愛", "Ren'ai"),
                [
                    ("愛三路", "Ai 3rd Rd.", 0, 0),
                    ("仁一路", "Ren 1st Rd.", 0, 0),
                    ("孝一路", "Xiao 1st Rd.", 0, 0)
                ]
            ),
            d!(
                "信義區",
                "Xinyi District",
                50,
                ("信義", "Xinyi"),
                [
                    ("信二路", "Xin 2nd Rd.", 0, 0),
                    ("東信路", "Dongxin Rd.", 0, 0),
                    ("深溪路", "Shenxi Rd.", 0, 0)
                ]
            ),
            d!(
                "中正區",
                "Zhongzheng District",
                50,
                ("中正", "Zhongzheng"),
                [
                    ("中正路", "Zhongzheng Rd.", 0, 0),
                    ("義一路", "Yi 1st Rd.", 0, 0),
                    ("北寧路", "Beining Rd.", 0, 0)
                ]
            ),
            d!(
                "安樂區",
                "Anle District",
                80,
                ("安樂", "Anle"),
                [
                    ("安樂路", "Anle Rd.", 1, 2),
                    ("基金一路", "Jijin 1st Rd.", 0, 0),
                    ("麥金路", "Maijin Rd.", 0, 0)
                ]
            ),
            d!(
                "七堵區",
                "Qidu District",
                52,
                ("七堵", "Qidu"),
                [
                    ("明德一路", "Mingde 1st Rd.", 0, 0),
                    ("東新街", "Dongxin St.", 0, 0),
                    ("福五街", "Fu 5th St.", 0, 0)
                ]
            ),
        ],
    },
    City {
        letter: 'D',
        zh: "臺南市",
        en: "Tainan City",
        kind: CityKind::Special,
        weight: 1860,
        land_value: 48_000,
        senior_highs: &[
            (
                "國立臺南第二高級中學",
                "National Tainan Second Senior High School",
            ),
            ("國立新營高級中學", "National Xinying Senior High School"),
        ],
        districts: &[
            d!(
                "東區",
                "East District",
                180,
                ("勝利", "Shengli"),
                [
                    ("東門路", "Dongmen Rd.", 1, 3),
                    ("林森路", "Linsen Rd.", 1, 2),
                    ("崇學路", "Chongxue Rd.", 0, 0),
                    ("大學路", "Daxue Rd.", 0, 0)
                ]
            ),
            d!(
                "北區",
                "North District",
                130,
                ("立人", "Liren"),
                [
                    ("北門路", "Beimen Rd.", 1, 2),
                    ("公園路", "Gongyuan Rd.", 0, 0),
                    ("成功路", "Chenggong Rd.", 0, 0)
                ]
            ),
            d!(
                "中西區",
                "West Central District",
                78,
                ("永福", "Yongfu"),
                [
                    ("中正路", "Zhongzheng Rd.", 0, 0),
                    ("民生路", "Minsheng Rd.", 1, 2),
                    ("西門路", "Ximen Rd.", 1, 2),
                    ("海安路", "Haian Rd.", 1, 2)
                ]
            ),
            d!(
                "永康區",
                "Yongkang District",
                235,
                ("永康", "Yongkang"),
                [
                    ("中正南路", "Zhongzheng S. Rd.", 0, 0),
                    ("中華路", "Zhonghua Rd.", 0, 0),
                    ("永大路", "Yongda Rd.", 1, 3)
                ]
            ),
            d!(
                "安平區",
                "Anping District",
                68,
                ("安平", "Anping"),
                [
                    ("安平路", "Anping Rd.", 0, 0),
                    ("健康路", "Jiankang Rd.", 3, 3),
                    ("永華路", "Yonghua Rd.", 2, 2)
                ]
            ),
            d!(
                "新營區",
                "Xinying District",
                75,
                ("新營", "Xinying"),
                [
                    ("中山路", "Zhongshan Rd.", 0, 0),
                    ("民治路", "Minzhi Rd.", 0, 0),
                    ("三民路", "Sanmin Rd.", 0, 0)
                ]
            ),
            d!(
                "安南區",
                "Annan District",
                200,
                ("安南", "Annan"),
                [
                    ("安和路", "Anhe Rd.", 1, 5),
                    ("海佃路", "Haidian Rd.", 1, 4),
                    ("安中路", "Anzhong Rd.", 1, 6)
                ]
            ),
        ],
    },
    City {
        letter: 'E',
        zh: "高雄市",
        en: "Kaohsiung City",
        kind: CityKind::Special,
        weight: 2730,
        land_value: 65_000,
        senior_highs: &[
            (
                "高雄市立中山高級中學",
                "Kaohsiung Municipal Zhongshan Senior High School",
            ),
            (
                "高雄市立前鎮高級中學",
                "Kaohsiung Municipal Qianzhen Senior High School",
            ),
        ],
        districts: &[
            d!(
                "三民區",
                "Sanmin District",
                330,
                ("三民", "Sanmin"),
                [
                    ("建工路", "Jiangong Rd.", 0, 0),
                    ("民族一路", "Minzu 1st Rd.", 0, 0),
                    ("九如一路", "Jiuru 1st Rd.", 0, 0),
                    ("大昌二路", "Dachang 2nd Rd.", 0, 0)
                ]
            ),
            d!(
                "苓雅區",
                "Lingya District",
                160,
                ("苓雅", "Lingya"),
                [
                    ("四維三路", "Siwei 3rd Rd.", 0, 0),
                    ("中正一路", "Zhongzheng 1st Rd.", 0, 0),
                    ("光華一路", "Guanghua 1st Rd.", 0, 0),
                    ("三多二路", "Sanduo 2nd Rd.", 0, 0)
                ]
            ),
            d!(
                "前鎮區",
                "Qianzhen District",
                180,
                ("前鎮", "Qianzhen"),
                [
                    ("中華五路", "Zhonghua 5th Rd.", 0, 0),
                    ("一心一路", "Yixin 1st Rd.", 0, 0),
                    ("成功二路", "Chenggong 2nd Rd.", 0, 0)
                ]
            ),
            d!(
                "左營區",
                "Zuoying District",
                200,
                ("左營", "Zuoying"),
                [
                    ("博愛二路", "Bo'ai 2nd Rd.", 0, 0),
                    ("自由二路", "Ziyou 2nd Rd.", 0, 0),
                    ("華夏路", "Huaxia Rd.", 0, 0)
                ]
            ),
            d!(
                "鼓山區",
                "Gushan District",
                140,
                ("鼓山", "Gushan"),
                [
                    ("美術東二路", "Meishu E. 2nd Rd.", 0, 0),
                    ("明華路", "Minghua Rd.", 0, 0),
                    ("臨海二路", "Linhai 2nd Rd.", 0, 0)
                ]
            ),
            d!(
                "鳳山區",
                "Fengshan District",
                355,
                ("鳳山", "Fengshan"),
                [
                    ("光復路", "Guangfu Rd.", 1, 2),
                    ("中山東路", "Zhongshan E. Rd.", 0, 0),
                    ("青年路", "Qingnian Rd.", 1, 2),
                    ("建國路", "Jianguo Rd.", 1, 3)
                ]
            ),
            d!(
                "楠梓區",
                "Nanzi District",
                190,
                ("楠梓", "Nanzi"),
                [
                    ("德民路", "Demin Rd.", 0, 0),
                    ("楠梓新路", "Nanzi New Rd.", 0, 0),
                    ("藍田路", "Lantian Rd.", 0, 0)
                ]
            ),
            d!(
                "岡山區",
                "Gangshan District",
                97,
                ("岡山", "Gangshan"),
                [
                    ("岡山路", "Gangshan Rd.", 0, 0),
                    ("中山北路", "Zhongshan N. Rd.", 0, 0),
                    ("柳橋東路", "Liuqiao E. Rd.", 0, 0)
                ]
            ),
        ],
    },
    City {
        letter: 'F',
        zh: "新北市",
        en: "New Taipei City",
        kind: CityKind::Special,
        weight: 4040,
        land_value: 130_000,
        senior_highs: &[
            (
                "新北市立板橋高級中學",
                "New Taipei Municipal Banqiao Senior High School",
            ),
            (
                "新北市立新莊高級中學",
                "New Taipei Municipal Xinzhuang Senior High School",
            ),
        ],
        districts: &[
            d!(
                "板橋區",
                "Banqiao District",
                550,
                ("板橋", "Banqiao"),
                [
                    ("文化路", "Wenhua Rd.", 1, 2),
                    ("中山路", "Zhongshan Rd.", 1, 2),
                    ("縣民大道", "Xianmin Blvd.", 2, 3),
                    ("民生路", "Minsheng Rd.", 1, 3)
                ]
            ),
            d!(
                "新莊區",
                "Xinzhuang District",
                420,
                ("新莊", "Xinzhuang"),
                [
                    ("中正路", "Zhongzheng Rd.", 0, 0),
                    ("思源路", "Siyuan Rd.", 0, 0),
                    ("中華路", "Zhonghua Rd.", 1, 2)
                ]
            ),
            d!(
                "中和區",
                "Zhonghe District",
                400,
                ("中和", "Zhonghe"),
                [
                    ("中山路", "Zhongshan Rd.", 2, 3),
                    ("景平路", "Jingping Rd.", 0, 0),
                    ("中正路", "Zhongzheng Rd.", 0, 0)
                ]
            ),
            d!(
                "永和區",
                "Yonghe District",
                210,
                ("永和", "Yonghe"),
                [
                    ("永和路", "Yonghe Rd.", 1, 2),
                    ("竹林路", "Zhulin Rd.", 0, 0),
                    ("中正路", "Zhongzheng Rd.", 0, 0)
                ]
            ),
            d!(
                "三重區",
                "Sanchong District",
                380,
                ("三重", "Sanchong"),
                [
                    ("重新路", "Chongxin Rd.", 1, 5),
                    ("正義北路", "Zhengyi N. Rd.", 0, 0),
                    ("三和路", "Sanhe Rd.", 1, 4)
                ]
            ),
            d!(
                "新店區",
                "Xindian District",
                300,
                ("新店", "Xindian"),
                [
                    ("北新路", "Beixin Rd.", 1, 3),
                    ("中正路", "Zhongzheng Rd.", 0, 0),
                    ("中興路", "Zhongxing Rd.", 1, 3)
                ]
            ),
            d!(
                "土城區",
                "Tucheng District",
                230,
                ("土城", "Tucheng"),
                [
                    ("中央路", "Zhongyang Rd.", 1, 4),
                    ("金城路", "Jincheng Rd.", 1, 3),
                    ("學府路", "Xuefu Rd.", 1, 2)
                ]
            ),
            d!(
                "淡水區",
                "Tamsui District",
                190,
                ("淡水", "Tamsui"),
                [
                    ("中山北路", "Zhongshan N. Rd.", 1, 2),
                    ("學府路", "Xuefu Rd.", 0, 0),
                    ("民權路", "Minquan Rd.", 0, 0)
                ]
            ),
            d!(
                "汐止區",
                "Xizhi District",
                205,
                ("汐止", "Xizhi"),
                [
                    ("大同路", "Datong Rd.", 1, 3),
                    ("新台五路", "Xintai 5th Rd.", 1, 2),
                    ("中興路", "Zhongxing Rd.", 0, 0)
                ]
            ),
            d!(
                "蘆洲區",
                "Luzhou District",
                200,
                ("蘆洲", "Luzhou"),
                [
                    ("中正路", "Zhongzheng Rd.", 0, 0),
                    ("長安街", "Chang'an St.", 0, 0),
                    ("三民路", "Sanmin Rd.", 0, 0)
                ]
            ),
        ],
    },
    City {
        letter: 'G',
        zh: "宜蘭縣",
        en: "Yilan County",
        kind: CityKind::County,
        weight: 450,
        land_value: 22_000,
        senior_highs: &[("國立宜蘭高級中學", "National Yilan Senior High School")],
        districts: &[
            d!(
                "宜蘭市",
                "Yilan City",
                95,
                ("宜蘭", "Yilan"),
                [
                    ("中山路", "Zhongshan Rd.", 1, 5),
                    ("神農路", "Shennong Rd.", 1, 2),
                    ("校舍路", "Xiaoshe Rd.", 0, 0)
                ]
            ),
            d!(
                "羅東鎮",
                "Luodong Township",
                71,
                ("羅東", "Luodong"),
                [
                    ("中正路", "Zhongzheng Rd.", 0, 0),
                    ("公正路", "Gongzheng Rd.", 0, 0),
                    ("純精路", "Chunjing Rd.", 1, 3)
                ]
            ),
            d!(
                "礁溪鄉",
                "Jiaoxi Township",
                35,
                ("礁溪", "Jiaoxi"),
                [
                    ("中山路", "Zhongshan Rd.", 1, 2),
                    ("礁溪路", "Jiaoxi Rd.", 4, 6)
                ]
            ),
            d!(
                "頭城鎮",
                "Toucheng Township",
                28,
                ("頭城", "Toucheng"),
                [
                    ("青雲路", "Qingyun Rd.", 1, 3),
                    ("開蘭路", "Kailan Rd.", 0, 0)
                ]
            ),
        ],
    },
    City {
        letter: 'H',
        zh: "桃園市",
        en: "Taoyuan City",
        kind: CityKind::Special,
        weight: 2330,
        land_value: 62_000,
        senior_highs: &[
            (
                "桃園市立武陵高級中等學校",
                "Taoyuan Municipal Wuling Senior High School",
            ),
            (
                "國立中壢高級中等學校",
                "National Zhongli Senior High School",
            ),
        ],
        districts: &[
            d!(
                "桃園區",
                "Taoyuan District",
                460,
                ("桃園", "Taoyuan"),
                [
                    ("中正路", "Zhongzheng Rd.", 0, 0),
                    ("經國路", "Jingguo Rd.", 0, 0),
                    ("民生路", "Minsheng Rd.", 0, 0),
                    ("復興路", "Fuxing Rd.", 0, 0)
                ]
            ),
            d!(
                "中壢區",
                "Zhongli District",
                430,
                ("中壢", "Zhongli"),
                [
                    ("中華路", "Zhonghua Rd.", 1, 2),
                    ("中央西路", "Zhongyang W. Rd.", 1, 2),
                    ("環中東路", "Huanzhong E. Rd.", 1, 2)
                ]
            ),
            d!(
                "平鎮區",
                "Pingzhen District",
                230,
                ("平鎮", "Pingzhen"),
                [
                    ("環南路", "Huannan Rd.", 1, 3),
                    ("延平路", "Yanping Rd.", 1, 3),
                    ("中豐路", "Zhongfeng Rd.", 0, 0)
                ]
            ),
            d!(
                "八德區",
                "Bade District",
                210,
                ("八德", "Bade"),
                [
                    ("介壽路", "Jieshou Rd.", 1, 2),
                    ("興豐路", "Xingfeng Rd.", 0, 0),
                    ("建國路", "Jianguo Rd.", 0, 0)
                ]
            ),
            d!(
                "龜山區",
                "Guishan District",
                170,
                ("龜山", "Guishan"),
                [
                    ("文化一路", "Wenhua 1st Rd.", 0, 0),
                    ("萬壽路", "Wanshou Rd.", 1, 2),
                    ("復興一路", "Fuxing 1st Rd.", 0, 0)
                ]
            ),
            d!(
                "蘆竹區",
                "Luzhu District",
                170,
                ("蘆竹", "Luzhu"),
                [
                    ("南崁路", "Nankan Rd.", 1, 2),
                    ("中正路", "Zhongzheng Rd.", 0, 0),
                    ("長興路", "Changxing Rd.", 0, 0)
                ]
            ),
            d!(
                "楊梅區",
                "Yangmei District",
                180,
                ("楊梅", "Yangmei"),
                [
                    ("中山北路", "Zhongshan N. Rd.", 1, 2),
                    ("大成路", "Dacheng Rd.", 0, 0)
                ]
            ),
        ],
    },
    City {
        letter: 'I',
        zh: "嘉義市",
        en: "Chiayi City",
        kind: CityKind::City,
        weight: 263,
        land_value: 42_000,
        senior_highs: &[(
            "國立嘉義高級工業職業學校",
            "National Chiayi Industrial Vocational High School",
        )],
        districts: &[
            d!(
                "東區",
                "East District",
                120,
                ("崇文", "Chongwen"),
                [
                    ("中山路", "Zhongshan Rd.", 0, 0),
                    ("民族路", "Minzu Rd.", 0, 0),
                    ("忠孝路", "Zhongxiao Rd.", 0, 0)
                ]
            ),
            d!(
                "西區",
                "West District",
                140,
                ("垂楊", "Chuiyang"),
                [
                    ("友愛路", "You'ai Rd.", 0, 0),
                    ("北港路", "Beigang Rd.", 0, 0),
                    ("興業西路", "Xingye W. Rd.", 0, 0)
                ]
            ),
        ],
    },
    City {
        letter: 'J',
        zh: "新竹縣",
        en: "Hsinchu County",
        kind: CityKind::County,
        weight: 590,
        land_value: 52_000,
        senior_highs: &[("國立竹北高級中學", "National Zhubei Senior High School")],
        districts: &[
            d!(
                "竹北市",
                "Zhubei City",
                210,
                ("竹北", "Zhubei"),
                [
                    ("光明六路", "Guangming 6th Rd.", 0, 0),
                    ("縣政二路", "Xianzheng 2nd Rd.", 0, 0),
                    ("自強北路", "Ziqiang N. Rd.", 0, 0),
                    ("莊敬北路", "Zhuangjing N. Rd.", 0, 0)
                ]
            ),
            d!(
                "竹東鎮",
                "Zhudong Township",
                97,
                ("竹東", "Zhudong"),
                [
                    ("長春路", "Changchun Rd.", 1, 3),
                    ("東林路", "Donglin Rd.", 0, 0),
                    ("北興路", "Beixing Rd.", 1, 3)
                ]
            ),
            d!(
                "湖口鄉",
                "Hukou Township",
                80,
                ("湖口", "Hukou"),
                [
                    ("仁和路", "Renhe Rd.", 0, 0),
                    ("中山路", "Zhongshan Rd.", 0, 0),
                    ("中正路", "Zhongzheng Rd.", 1, 2)
                ]
            ),
            d!(
                "新豐鄉",
                "Xinfeng Township",
                58,
                ("新豐", "Xinfeng"),
                [
                    ("建興路", "Jianxing Rd.", 1, 2),
                    ("新興路", "Xinxing Rd.", 0, 0)
                ]
            ),
        ],
    },
    City {
        letter: 'K',
        zh: "苗栗縣",
        en: "Miaoli County",
        kind: CityKind::County,
        weight: 535,
        land_value: 16_000,
        senior_highs: &[("國立苗栗高級中學", "National Miaoli Senior High School")],
        districts: &[
            d!(
                "苗栗市",
                "Miaoli City",
                85,
                ("苗栗", "Miaoli"),
                [
                    ("中正路", "Zhongzheng Rd.", 0, 0),
                    ("為公路", "Weigong Rd.", 0, 0),
                    ("府前路", "Fuqian Rd.", 0, 0)
                ]
            ),
            d!(
                "頭份市",
                "Toufen City",
                105,
                ("頭份", "Toufen"),
                [
                    ("中華路", "Zhonghua Rd.", 0, 0),
                    ("中正路", "Zhongzheng Rd.", 0, 0),
                    ("信義路", "Xinyi Rd.", 0, 0)
                ]
            ),
            d!(
                "竹南鎮",
                "Zhunan Township",
                89,
                ("竹南", "Zhunan"),
                [
                    ("光復路", "Guangfu Rd.", 0, 0),
                    ("博愛街", "Bo'ai St.", 0, 0),
                    ("中華路", "Zhonghua Rd.", 0, 0)
                ]
            ),
            d!(
                "苑裡鎮",
                "Yuanli Township",
                44,
                ("苑裡", "Yuanli"),
                [
                    ("為公路", "Weigong Rd.", 0, 0),
                    ("中山路", "Zhongshan Rd.", 0, 0)
                ]
            ),
        ],
    },
    City {
        letter: 'M',
        zh: "南投縣",
        en: "Nantou County",
        kind: CityKind::County,
        weight: 480,
        land_value: 13_000,
        senior_highs: &[("國立南投高級中學", "National Nantou Senior High School")],
        districts: &[
            d!(
                "南投市",
                "Nantou City",
                100,
                ("南投", "Nantou"),
                [
                    ("中興路", "Zhongxing Rd.", 0, 0),
                    ("復興路", "Fuxing Rd.", 0, 0),
                    ("三和三路", "Sanhe 3rd Rd.", 0, 0)
                ]
            ),
            d!(
                "草屯鎮",
                "Caotun Township",
                97,
                ("草屯", "Caotun"),
                [
                    ("中正路", "Zhongzheng Rd.", 0, 0),
                    ("太平路", "Taiping Rd.", 1, 2),
                    ("虎山路", "Hushan Rd.", 0, 0)
                ]
            ),
            d!(
                "埔里鎮",
                "Puli Township",
                79,
                ("埔里", "Puli"),
                [
                    ("中山路", "Zhongshan Rd.", 1, 4),
                    ("中正路", "Zhongzheng Rd.", 0, 0),
                    ("南昌街", "Nanchang St.", 0, 0)
                ]
            ),
            d!(
                "竹山鎮",
                "Zhushan Township",
                53,
                ("竹山", "Zhushan"),
                [
                    ("集山路", "Jishan Rd.", 1, 3),
                    ("竹山路", "Zhushan Rd.", 0, 0)
                ]
            ),
        ],
    },
    City {
        letter: 'N',
        zh: "彰化縣",
        en: "Changhua County",
        kind: CityKind::County,
        weight: 1240,
        land_value: 21_000,
        senior_highs: &[("國立員林高級中學", "National Yuanlin Senior High School")],
        districts: &[
            d!(
                "彰化市",
                "Changhua City",
                225,
                ("彰化", "Changhua"),
                [
                    ("中山路", "Zhongshan Rd.", 1, 3),
                    ("中正路", "Zhongzheng Rd.", 1, 2),
                    ("民族路", "Minzu Rd.", 0, 0),
                    ("旭光路", "Xuguang Rd.", 0, 0)
                ]
            ),
            d!(
                "員林市",
                "Yuanlin City",
                122,
                ("員林", "Yuanlin"),
                [
                    ("中山路", "Zhongshan Rd.", 1, 2),
                    ("光明街", "Guangming St.", 0, 0),
                    ("大同路", "Datong Rd.", 1, 2),
                    ("員東路", "Yuandong Rd.", 1, 2)
                ]
            ),
            d!(
                "鹿港鎮",
                "Lukang Township",
                85,
                ("鹿港", "Lukang"),
                [
                    ("中山路", "Zhongshan Rd.", 0, 0),
                    ("民族路", "Minzu Rd.", 0, 0),
                    ("復興路", "Fuxing Rd.", 0, 0)
                ]
            ),
            d!(
                "和美鎮",
                "Hemei Township",
                90,
                ("和美", "Hemei"),
                [
                    ("彰美路", "Zhangmei Rd.", 4, 6),
                    ("道周路", "Daozhou Rd.", 0, 0)
                ]
            ),
            d!(
                "溪湖鎮",
                "Xihu Township",
                53,
                ("溪湖", "Xihu"),
                [
                    ("彰水路", "Zhangshui Rd.", 2, 3),
                    ("員鹿路", "Yuanlu Rd.", 0, 0)
                ]
            ),
        ],
    },
    City {
        letter: 'O',
        zh: "新竹市",
        en: "Hsinchu City",
        kind: CityKind::City,
        weight: 455,
        land_value: 72_000,
        senior_highs: &[(
            "國立科學工業園區實驗高級中等學校",
            "National Experimental High School at Hsinchu Science Park",
        )],
        districts: &[
            d!(
                "東區",
                "East District",
                220,
                ("東門", "Dongmen"),
                [
                    ("光復路", "Guangfu Rd.", 1, 2),
                    ("建功一路", "Jiangong 1st Rd.", 0, 0),
                    ("民族路", "Minzu Rd.", 0, 0),
                    ("食品路", "Shipin Rd.", 0, 0)
                ]
            ),
            d!(
                "北區",
                "North District",
                155,
                ("北門", "Beimen"),
                [
                    ("中正路", "Zhongzheng Rd.", 0, 0),
                    ("北大路", "Beida Rd.", 0, 0),
                    ("經國路", "Jingguo Rd.", 1, 2)
                ]
            ),
            d!(
                "香山區",
                "Xiangshan District",
                80,
                ("香山", "Xiangshan"),
                [
                    ("中華路", "Zhonghua Rd.", 4, 6),
                    ("五福路", "Wufu Rd.", 1, 2),
                    ("大庄路", "Dazhuang Rd.", 0, 0)
                ]
            ),
        ],
    },
    City {
        letter: 'P',
        zh: "雲林縣",
        en: "Yunlin County",
        kind: CityKind::County,
        weight: 665,
        land_value: 11_000,
        senior_highs: &[("國立斗六高級中學", "National Douliu Senior High School")],
        districts: &[
            d!(
                "斗六市",
                "Douliu City",
                108,
                ("斗六", "Douliu"),
                [
                    ("雲林路", "Yunlin Rd.", 1, 2),
                    ("大學路", "Daxue Rd.", 1, 3),
                    ("中山路", "Zhongshan Rd.", 0, 0)
                ]
            ),
            d!(
                "虎尾鎮",
                "Huwei Township",
                70,
                ("虎尾", "Huwei"),
                [
                    ("林森路", "Linsen Rd.", 1, 2),
                    ("光復路", "Guangfu Rd.", 0, 0),
                    ("中正路", "Zhongzheng Rd.", 0, 0)
                ]
            ),
            d!(
                "斗南鎮",
                "Dounan Township",
                43,
                ("斗南", "Dounan"),
                [
                    ("中山路", "Zhongshan Rd.", 0, 0),
                    ("延平路", "Yanping Rd.", 1, 2)
                ]
            ),
            d!(
                "北港鎮",
                "Beigang Township",
                38,
                ("北港", "Beigang"),
                [
                    ("中山路", "Zhongshan Rd.", 0, 0),
                    ("文化路", "Wenhua Rd.", 0, 0),
                    ("華勝路", "Huasheng Rd.", 0, 0)
                ]
            ),
        ],
    },
    City {
        letter: 'Q',
        zh: "嘉義縣",
        en: "Chiayi County",
        kind: CityKind::County,
        weight: 485,
        land_value: 9_000,
        senior_highs: &[("國立東石高級中學", "National Dongshi Senior High School")],
        districts: &[
            d!(
                "太保市",
                "Taibao City",
                38,
                ("太保", "Taibao"),
                [
                    ("祥和一路", "Xianghe 1st Rd.", 0, 0),
                    ("北港路", "Beigang Rd.", 2, 2)
                ]
            ),
            d!(
                "朴子市",
                "Puzi City",
                41,
                ("朴子", "Puzi"),
                [
                    ("山通路", "Shantong Rd.", 0, 0),
                    ("開元路", "Kaiyuan Rd.", 0, 0),
                    ("大同路", "Datong Rd.", 0, 0)
                ]
            ),
            d!(
                "民雄鄉",
                "Minxiong Township",
                70,
                ("民雄", "Minxiong"),
                [
                    ("中樂路", "Zhongle Rd.", 0, 0),
                    ("建國路", "Jianguo Rd.", 1, 3),
                    ("文化路", "Wenhua Rd.", 0, 0)
                ]
            ),
            d!(
                "水上鄉",
                "Shuishang Township",
                48,
                ("水上", "Shuishang"),
                [
                    ("中山路", "Zhongshan Rd.", 1, 3),
                    ("忠和路", "Zhonghe Rd.", 0, 0)
                ]
            ),
        ],
    },
    City {
        letter: 'T',
        zh: "屏東縣",
        en: "Pingtung County",
        kind: CityKind::County,
        weight: 795,
        land_value: 13_000,
        senior_highs: &[("國立屏東高級中學", "National Pingtung Senior High School")],
        districts: &[
            d!(
                "屏東市",
                "Pingtung City",
                195,
                ("屏東", "Pingtung"),
                [
                    ("自由路", "Ziyou Rd.", 0, 0),
                    ("民生路", "Minsheng Rd.", 0, 0),
                    ("中正路", "Zhongzheng Rd.", 0, 0),
                    ("廣東路", "Guangdong Rd.", 0, 0)
                ]
            ),
            d!(
                "潮州鎮",
                "Chaozhou Township",
                53,
                ("潮州", "Chaozhou"),
                [
                    ("中山路", "Zhongshan Rd.", 0, 0),
                    ("延平路", "Yanping Rd.", 0, 0),
                    ("新生路", "Xinsheng Rd.", 0, 0)
                ]
            ),
            d!(
                "東港鎮",
                "Donggang Township",
                46,
                ("東港", "Donggang"),
                [
                    ("中正路", "Zhongzheng Rd.", 1, 1),
                    ("光復路", "Guangfu Rd.", 1, 3),
                    ("船頭路", "Chuantou Rd.", 0, 0)
                ]
            ),
            d!(
                "恆春鎮",
                "Hengchun Township",
                29,
                ("恆春", "Hengchun"),
                [
                    ("恆南路", "Hengnan Rd.", 0, 0),
                    ("中正路", "Zhongzheng Rd.", 0, 0)
                ]
            ),
        ],
    },
    City {
        letter: 'U',
        zh: "花蓮縣",
        en: "Hualien County",
        kind: CityKind::County,
        weight: 318,
        land_value: 16_000,
        senior_highs: &[("國立花蓮高級中學", "National Hualien Senior High School")],
        districts: &[
            d!(
                "花蓮市",
                "Hualien City",
                100,
                ("花蓮", "Hualien"),
                [
                    ("中山路", "Zhongshan Rd.", 0, 0),
                    ("中正路", "Zhongzheng Rd.", 0, 0),
                    ("林森路", "Linsen Rd.", 0, 0),
                    ("中華路", "Zhonghua Rd.", 0, 0)
                ]
            ),
            d!(
                "吉安鄉",
                "Ji'an Township",
                83,
                ("吉安", "Ji'an"),
                [
                    ("中山路", "Zhongshan Rd.", 1, 3),
                    ("中華路", "Zhonghua Rd.", 1, 3),
                    ("南濱路", "Nanbin Rd.", 0, 0)
                ]
            ),
            d!(
                "玉里鎮",
                "Yuli Township",
                22,
                ("玉里", "Yuli"),
                [
                    ("中山路", "Zhongshan Rd.", 0, 0),
                    ("中華路", "Zhonghua Rd.", 0, 0)
                ]
            ),
        ],
    },
    City {
        letter: 'V',
        zh: "臺東縣",
        en: "Taitung County",
        kind: CityKind::County,
        weight: 213,
        land_value: 11_000,
        senior_highs: &[("國立臺東高級中學", "National Taitung Senior High School")],
        districts: &[
            d!(
                "臺東市",
                "Taitung City",
                104,
                ("臺東", "Taitung"),
                [
                    ("中華路", "Zhonghua Rd.", 1, 4),
                    ("更生路", "Gengsheng Rd.", 0, 0),
                    ("四維路", "Siwei Rd.", 1, 3)
                ]
            ),
            d!(
                "成功鎮",
                "Chenggong Township",
                13,
                ("成功", "Chenggong"),
                [
                    ("中山路", "Zhongshan Rd.", 0, 0),
                    ("中華路", "Zhonghua Rd.", 0, 0)
                ]
            ),
            d!(
                "關山鎮",
                "Guanshan Township",
                8,
                ("關山", "Guanshan"),
                [
                    ("中山路", "Zhongshan Rd.", 0, 0),
                    ("和平路", "Heping Rd.", 0, 0)
                ]
            ),
        ],
    },
    City {
        letter: 'W',
        zh: "金門縣",
        en: "Kinmen County",
        kind: CityKind::County,
        weight: 144,
        land_value: 11_000,
        senior_highs: &[("國立金門高級中學", "National Kinmen Senior High School")],
        districts: &[
            d!(
                "金城鎮",
                "Jincheng Township",
                43,
                ("金城", "Jincheng"),
                [
                    ("民生路", "Minsheng Rd.", 0, 0),
                    ("民權路", "Minquan Rd.", 0, 0),
                    ("環島北路", "Huandao N. Rd.", 1, 2)
                ]
            ),
            d!(
                "金湖鎮",
                "Jinhu Township",
                30,
                ("金湖", "Jinhu"),
                [
                    ("復興路", "Fuxing Rd.", 0, 0),
                    ("環島東路", "Huandao E. Rd.", 1, 3)
                ]
            ),
            d!(
                "金沙鎮",
                "Jinsha Township",
                21,
                ("金沙", "Jinsha"),
                [
                    ("環島北路", "Huandao N. Rd.", 3, 4),
                    ("三民路", "Sanmin Rd.", 0, 0)
                ]
            ),
        ],
    },
    City {
        letter: 'X',
        zh: "澎湖縣",
        en: "Penghu County",
        kind: CityKind::County,
        weight: 108,
        land_value: 9_000,
        senior_highs: &[("國立馬公高級中學", "National Magong Senior High School")],
        districts: &[
            d!(
                "馬公市",
                "Magong City",
                63,
                ("馬公", "Magong"),
                [
                    ("中正路", "Zhongzheng Rd.", 0, 0),
                    ("光復路", "Guangfu Rd.", 0, 0),
                    ("三多路", "Sanduo Rd.", 0, 0)
                ]
            ),
            d!(
                "湖西鄉",
                "Huxi Township",
                15,
                ("湖西", "Huxi"),
                [
                    ("湖西村", "Huxi Village", 0, 0),
                    ("林投村", "Lintou Village", 0, 0)
                ]
            ),
        ],
    },
    City {
        letter: 'Z',
        zh: "連江縣",
        en: "Lienchiang County",
        kind: CityKind::County,
        weight: 14,
        land_value: 7_000,
        senior_highs: &[(
            "連江縣立馬祖高級中學",
            "Lienchiang County Matsu Senior High School",
        )],
        districts: &[
            d!(
                "南竿鄉",
                "Nangan Township",
                8,
                ("介壽", "Jieshou"),
                [
                    ("介壽村", "Jieshou Village", 0, 0),
                    ("復興村", "Fuxing Village", 0, 0),
                    ("清水村", "Qingshui Village", 0, 0)
                ]
            ),
            d!(
                "北竿鄉",
                "Beigan Township",
                3,
                ("塘岐", "Tangqi"),
                [
                    ("塘岐村", "Tangqi Village", 0, 0),
                    ("白沙村", "Baisha Village", 0, 0)
                ]
            ),
        ],
    },
];

/// Chinese numerals for street sections 1-9.
pub(crate) const SECTION_ZH: [&str; 10] =
    ["", "一", "二", "三", "四", "五", "六", "七", "八", "九"];

/// A university: Chinese and English name, city letter, weight by size.
pub(crate) type University = (&'static str, &'static str, u32);

/// Universities students are drawn from, weighted by size.
pub(crate) static UNIVERSITIES: &[University] = &[
    ("國立臺灣大學", "National Taiwan University", 32),
    ("國立政治大學", "National Chengchi University", 16),
    ("國立臺灣師範大學", "National Taiwan Normal University", 14),
    (
        "國立陽明交通大學",
        "National Yang Ming Chiao Tung University",
        16,
    ),
    ("國立清華大學", "National Tsing Hua University", 16),
    ("國立成功大學", "National Cheng Kung University", 22),
    ("國立中興大學", "National Chung Hsing University", 16),
    ("國立中山大學", "National Sun Yat-sen University", 12),
    ("國立中央大學", "National Central University", 12),
    ("國立臺北大學", "National Taipei University", 10),
    ("輔仁大學", "Fu Jen Catholic University", 25),
    ("逢甲大學", "Feng Chia University", 23),
    ("國立中正大學", "National Chung Cheng University", 12),
    ("國立嘉義大學", "National Chiayi University", 11),
    ("國立東華大學", "National Dong Hwa University", 10),
    ("國立宜蘭大學", "National Ilan University", 5),
    ("國立臺東大學", "National Taitung University", 4),
    ("國立屏東大學", "National Pingtung University", 9),
    ("國立暨南國際大學", "National Chi Nan University", 6),
    (
        "國立彰化師範大學",
        "National Changhua University of Education",
        8,
    ),
    ("國立聯合大學", "National United University", 7),
    (
        "國立雲林科技大學",
        "National Yunlin University of Science and Technology",
        10,
    ),
    (
        "國立臺灣科技大學",
        "National Taiwan University of Science and Technology",
        11,
    ),
    ("國立臺灣海洋大學", "National Taiwan Ocean University", 8),
    ("國立金門大學", "National Quemoy University", 3),
    (
        "國立澎湖科技大學",
        "National Penghu University of Science and Technology",
        2,
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn there_are_22_cities_with_distinct_letters_and_streets() {
        assert_eq!(CITIES.len(), 22);
        let mut letters: Vec<char> = CITIES.iter().map(|c| c.letter).collect();
        letters.dedup();
        assert_eq!(letters.len(), 22);
        for c in CITIES {
            assert!(
                !c.districts.is_empty() && c.districts.len() < 100,
                "{}",
                c.en
            );
            assert!(!c.senior_highs.is_empty());
            for d in c.districts {
                assert!(!d.streets.is_empty(), "{}", d.en);
                for s in d.streets {
                    assert!(s.2 <= s.3 && s.3 < 10, "{}", s.1);
                }
            }
        }
    }
}
