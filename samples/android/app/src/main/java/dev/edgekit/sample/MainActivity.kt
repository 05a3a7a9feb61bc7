package dev.edgekit.sample

import android.app.Activity
import android.os.Bundle
import android.widget.Button
import android.widget.EditText
import android.widget.LinearLayout
import android.widget.ScrollView
import android.widget.TextView
import java.io.File
import kotlin.concurrent.thread

/**
 * Chat with an edgekit Android bundle. Push the bundle folder first:
 *   adb push dist/<bundle> /sdcard/Android/data/dev.edgekit.sample/files/bundle
 */
class MainActivity : Activity() {
    private var runner: BundleRunner? = null

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        val output = TextView(this)
        val input = EditText(this).apply { hint = "Ask something" }
        val send = Button(this).apply { text = "Send"; isEnabled = false }
        setContentView(LinearLayout(this).apply {
            orientation = LinearLayout.VERTICAL
            addView(input)
            addView(send)
            addView(ScrollView(context).apply { addView(output) })
        })

        val bundleDir = File(getExternalFilesDir(null), "bundle")
        thread {
            val r = BundleRunner(bundleDir)
            val status = r.load()
            runOnUiThread {
                output.text = if (status == 0) "${r.describe()}\n" else "load failed: error $status\n"
                runner = r
                send.isEnabled = status == 0
            }
        }
        send.setOnClickListener {
            val question = input.text.toString()
            output.append("\n> $question\n")
            send.isEnabled = false
            thread {
                runner?.chat(question) { piece -> runOnUiThread { output.append(piece) } }
                runOnUiThread { send.isEnabled = true }
            }
        }
    }
}
