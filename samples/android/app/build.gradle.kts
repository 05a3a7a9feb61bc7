plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

android {
    namespace = "dev.edgekit.sample"
    compileSdk = 35
    defaultConfig {
        applicationId = "dev.edgekit.sample"
        minSdk = 28          // bundles say their minimum in manifest.json target.min_os
        targetSdk = 35
        versionCode = 1
        versionName = "0.1"
        ndk { abiFilters += listOf("arm64-v8a", "x86_64") }
    }
    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions { jvmTarget = "17" }
}

dependencies {
    // ExecuTorch's Android library: LlmModule (the LLM runner with XNNPACK and the HF tokenizer.json loader).
    implementation("org.pytorch:executorch-android:${property("executorchVersion")}")
    implementation("com.facebook.soloader:soloader:0.10.5")
    implementation("com.facebook.fbjni:fbjni:0.5.1")
}
